"""Validation checks on hand-made data: every rule trips where it should and stays quiet where it should not.

Expected numbers come from the constructions (a row swapped, a value negated, a bucket dropped), not from
running the code under test.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools

import numpy as np
import pyarrow as pa
import pytest
from lake_builders import SPOT, arrival_trades, book_table, write_master, write_ticks

from mdth_engine.core.errors import UsageError
from mdth_engine.core.timeframes import US_PER_DAY, US_PER_SECOND, day_start_us
from mdth_engine.features.batch import build_candles
from mdth_engine.stages.base import Request
from mdth_engine.validation import report as rp
from mdth_engine.validation.candle_checks import aggregation_problem, grid_problem
from mdth_engine.validation.content import history_check, silence_check
from mdth_engine.validation.coverage import coverage
from mdth_engine.validation.cross_source import compare, endpoints, market_of, parse_klines
from mdth_engine.validation.expected import Expected, Holding
from mdth_engine.validation.fix import FixTarget, fix_requests, fix_targets
from mdth_engine.validation.incidents import Incident, SourceFacts, parse_details
from mdth_engine.validation.scan import SKEW_US, FileScan, hash_strings

DAY = dt.date(2024, 1, 1)
D0 = day_start_us(DAY)


def scan(table: pa.Table, data_type: str = "trades", pieces: int = 1):
    s = FileScan(data_type, D0)
    bounds = np.linspace(0, table.num_rows, pieces + 1).astype(int)
    for a, b in itertools.pairwise(bounds):
        s.update(table.slice(a, b - a))
    return s.finish()


def holding(data_type: str = "trades", rows: int = 0, live=(D0, D0 + US_PER_DAY)) -> Holding:
    e = Expected(SPOT, data_type, "p", "u", "binance", "BTCUSDT", "SPOT_PAIR", *live)
    return Holding(e, rp.PRESENT, rows=rows)


# --- hashing and the streaming scan --------------------------------------------------------------------------


def test_string_hashes_equal_exactly_for_equal_strings():
    values = pa.array(["1", "12", "21", "", "a" * 40, None, "12", "é", "e"])
    h = hash_strings(values)
    assert h.size == 8  # the null is dropped
    assert h[1] == h[5]  # "12" twice (the null before it is dropped)
    assert len(set(h.tolist())) == 7
    # Slices, chunked and large strings hash the same values the same way.
    assert hash_strings(values.slice(1, 3)).tolist() == h[1:4].tolist()
    chunked = pa.chunked_array([values.slice(0, 4), values.slice(4)])
    assert hash_strings(chunked).tolist() == h.tolist()
    assert hash_strings(values.cast(pa.large_string())).tolist() == h.tolist()
    many = pa.array([str(i) for i in range(200_000)])
    assert np.unique(hash_strings(many)).size == 200_000


def test_clean_trades_pass_and_the_scan_is_the_same_in_any_batching():
    table = arrival_trades(DAY, 5000, seed=1)
    whole, parts = scan(table), scan(table, pieces=7)
    for field in (
        "rows",
        "local_decreases",
        "ts_early",
        "ts_late",
        "duplicate_ids",
        "trade_count",
        "bad_value_rows",
    ):
        assert getattr(whole, field) == getattr(parts, field), field
    assert np.array_equal(whole.gap_histogram, parts.gap_histogram)
    assert whole.long_gaps == parts.long_gaps
    assert whole.trade_volume == pytest.approx(parts.trade_volume, rel=1e-12)
    assert (whole.local_decreases, whole.duplicate_ids, whole.bad_value_rows, whole.domain_bad) == (
        0,
        0,
        0,
        0,
    )
    ts = table["timestamp"].cast(pa.int64()).to_numpy()
    assert (
        whole.trade_count == int(((ts >= D0) & (ts < D0 + US_PER_DAY)).sum()) == 4999
    )  # row 0: the day before
    assert whole.ts_early == whole.ts_late == 0  # 5 ms before midnight is inside the skew


def test_swapped_rows_duplicates_bad_values_and_sides_are_counted():
    table = arrival_trades(DAY, 1000, seed=2)
    order = np.arange(1000)
    order[[100, 101]] = [101, 100]  # one swap: one step back in time
    order[[500, 700]] = [700, 500]  # a far swap: two steps back (into 500, and after 700)
    swapped = table.take(pa.array(order))
    assert scan(swapped, pieces=3).local_decreases == 3
    dup = pa.concat_tables([table.slice(0, 10), table.slice(9, 1), table.slice(10)])  # row 9 twice, adjacent
    assert scan(dup).duplicate_ids == 1 and scan(dup).local_decreases == 0
    price = table["price"].to_numpy().copy()
    price[[3, 4]] = [-1.0, np.nan]
    sides = pa.array(["buy"] * 999 + ["BUY"]).dictionary_encode()
    bad = table.set_column(table.schema.get_field_index("price"), "price", pa.array(price))
    bad = bad.set_column(bad.schema.get_field_index("side"), "side", sides)
    stats = scan(bad)
    assert stats.bad_value_rows == 2 and stats.value_issues["price"] == 2
    assert stats.domain_bad == 1 and stats.domain_examples == {"'BUY'"}
    assert stats.trade_count == 999 - 1  # the NaN price does not count; the negative one does (as candles do)


def test_timestamps_outside_the_day_and_the_skew_edge():
    table = arrival_trades(DAY, 100, seed=3)
    ts = table["timestamp"].cast(pa.int64()).to_numpy().copy()
    ts[10] = D0 - SKEW_US  # exactly at the allowance: fine
    ts[11] = D0 - SKEW_US - 1  # one microsecond beyond: early
    ts[12] = D0 + US_PER_DAY + SKEW_US  # late
    changed = table.set_column(0, "timestamp", pa.array(ts).cast(table.schema.field("timestamp").type))
    stats = scan(changed)
    assert (stats.ts_early, stats.ts_late) == (1, 1)
    local = table["local_timestamp"].cast(pa.int64()).to_numpy().copy()
    local[-1] = D0 + US_PER_DAY  # arrived after the day: not this file's row
    moved = table.set_column(
        1, "local_timestamp", pa.array(local).cast(table.schema.field("local_timestamp").type)
    )
    assert scan(moved).local_outside == 1


def test_book_crossed_locked_and_disordered_rows():
    book = book_table(DAY, 1000, seed=4)
    bid1 = book["bid_price_1"].to_numpy().copy()
    ask1 = book["ask_price_1"].to_numpy()
    bid1[[1, 2]] = ask1[[1, 2]] + 1.0  # crossed twice
    bid1[3] = ask1[3]  # locked once
    ask3 = book["ask_price_3"].to_numpy().copy()
    ask3[7] = book["ask_price_1"].to_numpy()[7] - 0.1  # level 3 better than level 1... and 2: out of order
    amount = book["bid_amount_2"].to_numpy().copy()
    amount[9] = np.nan  # a price without an amount
    for name, values in (("bid_price_1", bid1), ("ask_price_3", ask3), ("bid_amount_2", amount)):
        book = book.set_column(book.schema.get_field_index(name), name, pa.array(values))
    stats = scan(book, "book_snapshot_5", pieces=2)
    assert (stats.crossed, stats.locked) == (2, 1)
    assert stats.disordered == 1  # row 7 (a raised bid 1 stays above bid 2: crossed, not out of order)
    assert stats.value_issues["bid_amount_2"] == 1 and stats.bad_value_rows == 1


# --- silences and history ------------------------------------------------------------------------------------


def regular_scan(step_s: float, hole: tuple[float, float] | None = None):
    local = D0 + (np.arange(0, 86_400, step_s) * US_PER_SECOND).astype(np.int64)
    if hole:
        local = local[(local < D0 + hole[0] * US_PER_SECOND) | (local >= D0 + hole[1] * US_PER_SECOND)]
    ts = pa.array(local).cast(pa.timestamp("us", tz="UTC"))
    table = pa.table(
        {"timestamp": ts, "local_timestamp": ts, "price": np.ones(local.size), "amount": np.ones(local.size)}
    )
    return scan(table, "derivative_ticker")


def test_silence_is_flagged_against_the_files_own_rhythm_and_names_the_incident():
    quiet = regular_scan(10.0)
    assert silence_check(holding("derivative_ticker"), quiet, None).status == rp.OK
    holed = regular_scan(10.0, (12 * 3600, 13 * 3600 + 45 * 60))
    row = silence_check(holding("derivative_ticker"), holed, None)
    assert row.status == rp.WARN and row.issues == 1
    assert row.value == pytest.approx(6310, abs=1)  # 12:00 - 13:45 plus the 10 s step
    assert row.limit == pytest.approx(80, rel=0.06)  # 8 x the 10 s rhythm (histogram resolution 4 %)
    assert "not in the source's incident reports" in row.detail
    incident = Incident(
        D0 + 12 * 3600 * US_PER_SECOND, D0 + (13 * 3600 + 2700) * US_PER_SECOND, "resolved", "lost it"
    )
    named = silence_check(holding("derivative_ticker"), holed, SourceFacts((incident,)))
    assert "Tardis incident 2024-01-01 12:00-13:45 UTC (resolved): lost it" in named.detail
    # The part of the day before a listing is not a silence.
    late_start = regular_scan(10.0, (0, 8 * 3600))
    listed_at_8 = holding("derivative_ticker", live=(D0 + 8 * 3600 * US_PER_SECOND, D0 + US_PER_DAY))
    assert silence_check(listed_at_8, late_start, None).status == rp.OK
    assert silence_check(holding("derivative_ticker"), late_start, None).status == rp.WARN
    few = regular_scan(600.0)  # 144 rows: too few to judge
    assert silence_check(holding("derivative_ticker"), few, None).status == rp.SKIP


def test_row_history_rules():
    assert history_check(holding(rows=1000), [1000, 900, 1100]).status == rp.OK
    low = history_check(holding(rows=150), [1000, 900, 1100])
    assert low.status == rp.WARN and low.value == pytest.approx(0.15)
    assert history_check(holding(rows=6000), [1000, 900, 1100]).status == rp.WARN
    assert history_check(holding(rows=1000), [1000, 900]).status == rp.SKIP  # two earlier days only
    assert history_check(holding("liquidations", rows=1), [1000] * 5).status == rp.SKIP
    partial = holding(rows=10, live=(D0, D0 + 3600 * US_PER_SECOND))
    assert history_check(partial, [1000] * 5).status == rp.SKIP


# --- candles -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def candles():
    return build_candles(
        DAY,
        trades=arrival_trades(DAY, 20_000, seed=5, bursty=True),
        liquidations=None,
        derivative_ticker=None,
        book=None,
        timeframes=["15s", "1m", "5m", "1h"],
    )


def test_candles_built_from_ticks_pass_grid_and_aggregation(candles):
    for tf in ("15s", "1m", "5m", "1h"):
        assert grid_problem(candles[tf], DAY, tf) == ""
    assert aggregation_problem(candles["1m"], candles["5m"], "1m", "5m") == (0, "")
    assert aggregation_problem(candles["5m"], candles["1h"], "5m", "1h") == (0, "")


def test_a_dropped_bucket_and_a_tampered_high_are_found(candles):
    one = candles["1m"]
    dropped = pa.concat_tables([one.slice(0, 603), one.slice(604)])
    assert "1 buckets missing (first 10:03:00)" in grid_problem(dropped, DAY, "1m")
    five = candles["5m"]
    high = five["high"].to_numpy().copy()
    i = int(np.argmax(high > 0))
    high[i] += 1.0
    tampered = five.set_column(five.schema.get_field_index("high"), "high", pa.array(high))
    count, detail = aggregation_problem(one, tampered, "1m", "5m")
    assert count == 1 and detail.startswith("5m vs 1m: 1 buckets disagree") and detail.endswith("high)")


def kline_rows(one: pa.Table) -> list[list]:
    rows = []
    for r in one.to_pylist():
        ms = int(r["timestamp"].timestamp() * 1000)
        close = r["close"] if r["trade_count"] else 1.0
        o, h, lo = (r[k] if r["trade_count"] else close for k in ("open", "high", "low"))
        rows.append(
            [
                ms,
                f"{o:.8f}",
                f"{h:.8f}",
                f"{lo:.8f}",
                f"{close:.8f}",
                f"{r['volume']:.8f}",
                ms + 59_999,
                "0",
                r["trade_count"],
                "0",
                "0",
                "0",
            ]
        )
    return rows


def test_cross_source_equal_differs_and_explained(candles):
    one = candles["1m"]
    klines = parse_klines(kline_rows(one))
    assert compare(SPOT, one, klines, D0, None, (False, False), "Binance spot BTCUSDT").status == rp.OK
    busy = int(np.argmax(one["trade_count"].to_numpy() > 3))
    off = dict(klines, count=klines["count"].copy())
    off["count"][busy] += 1
    row = compare(SPOT, one, off, D0, None, (False, False), "Binance spot BTCUSDT")
    assert row.status == rp.ERROR and row.issues == 1
    minute = D0 + busy * 60 * US_PER_SECOND
    incident = SourceFacts((Incident(minute, minute + 60 * US_PER_SECOND, "resolved", "gap"),))
    explained = compare(SPOT, one, off, D0, incident, (False, False), "Binance spot BTCUSDT")
    assert explained.status == rp.WARN and "1 explained" in explained.detail
    last = dict(klines, count=klines["count"].copy())
    last["count"][-1] += 1  # the day's last minute, next day not in the lake: explained
    assert compare(SPOT, one, last, D0, None, (False, True), "x").status == rp.WARN
    assert compare(SPOT, one, last, D0, None, (False, False), "x").status == rp.ERROR


def test_cross_source_markets_and_endpoints(monkeypatch):
    monkeypatch.delenv("MDTH_BINANCE_REST_URL", raising=False)
    monkeypatch.delenv("MDTH_BINANCE_FUTURES_REST_URL", raising=False)
    assert endpoints({}) == {"spot": "https://api.binance.com", "futures": "https://fapi.binance.com"}
    monkeypatch.setenv("MDTH_BINANCE_REST_URL", "http://127.0.0.1:9/")
    assert endpoints({}) == {"spot": "http://127.0.0.1:9", "futures": "http://127.0.0.1:9"}
    assert market_of({"venue": "BINANCE", "instrument_type": "SPOT_PAIR", "tardis_symbol": "BTCUSDT"}) == (
        "spot",
        "BTCUSDT",
    )
    perp = {
        "venue": "BINANCE-FUTURES",
        "instrument_type": "PERPETUAL",
        "tardis_symbol": "BTCUSDT",
        "inverse": False,
    }
    assert market_of(perp) == ("futures", "BTCUSDT")
    assert market_of({**perp, "inverse": True}) is None  # coin-margined klines live elsewhere
    assert (
        market_of({"venue": "DERIBIT", "instrument_type": "PERPETUAL", "tardis_symbol": "BTC-PERPETUAL"})
        is None
    )


def test_incident_reports_are_parsed_leniently():
    facts = parse_details(
        {
            "incidentReports": [
                {
                    "from": "2023-03-24T12:00:00.000Z",
                    "to": "2023-03-24T13:45:00.000Z",
                    "status": "resolved",
                    "details": "x",
                },
                {"from": "garbage", "to": "2023-03-24T13:45:00.000Z"},
                "not a dict",
            ],
            "datasets": {"exportedUntil": "2025-06-01T00:00:00.000Z"},
        }
    )
    assert len(facts.incidents) == 1 and facts.exported_until == dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


# --- fix requests, checks names, report ------------------------------------------------------------------------


def test_fix_requests_cover_exactly_the_targets():
    d1, d2, d3 = DAY, DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=3)
    targets = [
        FixTarget(d1, "A:SPOT_PAIR:X-Y", "trades"),
        FixTarget(d2, "A:SPOT_PAIR:X-Y", "trades"),
        FixTarget(d1, "B:SPOT_PAIR:X-Y", "trades"),
        FixTarget(d1, "B:SPOT_PAIR:X-Y", "book_snapshot_5"),
        FixTarget(d3, "A:SPOT_PAIR:X-Y", "trades", force=True),
    ]
    requests = fix_requests(targets, Request("validate", d1, d3))
    covered = {
        (r.start + dt.timedelta(days=i), k, t, r.options["force"])
        for r in requests
        for i in range((r.end - r.start).days + 1)
        for k in r.symbols
        for t in r.data_types
    }
    assert covered == {(t.day, t.instrument_key, t.data_type, t.force) for t in targets}
    assert all(r.operation == "download" for r in requests)
    assert any(r.start == d1 and r.end == d2 and r.symbols == ("A:SPOT_PAIR:X-Y",) for r in requests)
    whole = fix_requests([FixTarget(d1, "", "")], Request("validate", d1, d1, venues=("BINANCE",)))
    assert whole == [Request("download", d1, d1, venues=("BINANCE",), options={"force": False})]


def test_fix_targets_from_report_rows():
    now = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    checks = [
        rp.Check(SPOT, "trades", "completeness", rp.ERROR, rp.MISSING),
        rp.Check(SPOT, "book_snapshot_5", "completeness", rp.OK, rp.PRESENT),
        rp.Check(SPOT, "book_snapshot_5", "duplicate_ids", rp.ERROR, rp.PRESENT),
        rp.Check(SPOT, "liquidations", "completeness", rp.WARN, rp.NOT_FOUND),
        rp.Check(SPOT, "quotes", "completeness", rp.WARN, rp.EMPTY),
        rp.Check(SPOT, "quotes", "silence", rp.WARN, rp.EMPTY),
        rp.Check(SPOT, rp.CANDLES, "candle_totals", rp.ERROR, rp.PRESENT),
    ]
    targets = fix_targets(rp.to_table(DAY, checks, now))
    assert targets == [FixTarget(DAY, SPOT, "book_snapshot_5", True), FixTarget(DAY, SPOT, "trades", False)]


def test_check_groups_and_report_schema():
    assert rp.parse_checks(None) == list(rp.CHECK_GROUPS)
    assert rp.parse_checks("candles") == ["completeness", "candles"]
    with pytest.raises(UsageError, match="unknown check group 'speed'"):
        rp.parse_checks("speed")
    with pytest.raises(ValueError):
        rp.Check(SPOT, "trades", "made_up", rp.OK)
    table = rp.to_table(
        DAY,
        [rp.Check(SPOT, "trades", "silence", rp.WARN, rp.PRESENT, rows=3, value=1.5)],
        dt.datetime.now(dt.UTC),
    )
    assert table.schema.equals(rp.REPORT_SCHEMA)
    summary = rp.summarize(DAY, table)
    assert summary["status"] == rp.WARN and summary["counts"] == {"ok": 0, "warn": 1, "error": 0, "skip": 0}


# --- coverage on a hand-made lake ----------------------------------------------------------------------------


def test_coverage_classes_present_empty_and_never_attempted(local_store):
    from lake_builders import PERP

    write_master(local_store, DAY, [SPOT, PERP])
    write_ticks(local_store, DAY, "trades", SPOT, arrival_trades(DAY, 100, seed=6))
    write_ticks(local_store, DAY, "book_snapshot_5", SPOT, book_table(DAY, 100, seed=7).slice(0, 0))
    table = coverage(local_store, DAY, DAY, data_types=("trades", "book_snapshot_5"))
    cells = {(r["instrument_key"], r["data_type"]): r["class"] for r in table.to_pylist()}
    assert cells == {
        (SPOT, "trades"): "present",
        (SPOT, "book_snapshot_5"): "empty",
        (PERP, "trades"): "never_attempted",
        (PERP, "book_snapshot_5"): "never_attempted",
    }
    rows = {r["data_type"]: r["rows"] for r in table.to_pylist() if r["instrument_key"] == SPOT}
    assert rows == {"trades": 100, "book_snapshot_5": 0}
    # A day without a master is one row; an instrument not listed that day is not expected that day.
    two = coverage(local_store, DAY, DAY + dt.timedelta(days=1), symbols=(SPOT,), data_types=("trades",))
    assert [(r["day"], r["class"]) for r in two.to_pylist()] == [
        (DAY, "present"),
        (DAY + dt.timedelta(days=1), "no_master"),
    ]


def test_expected_comes_from_the_download_plan(local_store):
    """The lake builders' master gives BINANCE-FUTURES perps 4 data types and spot pairs 2: so must validation."""
    from lake_builders import PERP

    from mdth_engine.core.settings import load_settings
    from mdth_engine.stages.registry import StageContext
    from mdth_engine.validation.expected import expected_for_day

    write_master(local_store, DAY, [SPOT, PERP])
    from mdth_engine.stages.instruments import read_instruments
    from mdth_engine.storage import layout

    ctx = StageContext(load_settings(lake=local_store.url), local_store, local_store.local_path("spool"))
    master = read_instruments(local_store, layout.instruments_path(DAY))
    expected = expected_for_day(
        ctx, dataclasses.replace(Request("validate", DAY, DAY), data_types=()), DAY, master
    )
    got = sorted((e.instrument_key, e.data_type) for e in expected)
    assert got == sorted(
        [(SPOT, "trades"), (SPOT, "book_snapshot_5")]
        + [(PERP, t) for t in ("trades", "book_snapshot_5", "derivative_ticker", "liquidations")]
    )


# --- the stage on hand-made lakes (a local folder and the GCS emulator) ----------------------------------------


def run_validate(lake_url: str, request: Request):
    import asyncio

    from mdth_engine.api import run_stage
    from mdth_engine.core.settings import load_settings

    # An address nothing listens on: the source's incident reports are simply not there.
    settings = load_settings(lake=lake_url, tardis_api_url="http://127.0.0.1:9/v1")
    return asyncio.run(run_stage(request, settings, concurrency=1))


def test_a_day_without_instrument_master_is_an_error_with_the_command_to_run(tmp_path):
    from mdth_engine.storage.store import open_store

    summary = run_validate(str(tmp_path), Request("validate", DAY, DAY))
    assert summary.exit_code == 1 and summary.outcomes == {"failed": 1}
    table = rp.read_report(open_store(str(tmp_path)), DAY)
    assert table is not None and table.num_rows == 1
    only = table.to_pylist()[0]
    assert (only["check"], only["status"], only["class"]) == ("instrument_master", "error", "never_attempted")
    assert "mdth instruments --start 2024-01-01" in only["detail"]


def test_validation_on_gcs_finds_a_duplicated_trade(gcs_store, gcs_bucket):
    from lake_builders import PERP

    write_master(gcs_store, DAY, [SPOT, PERP])
    write_ticks(gcs_store, DAY, "trades", SPOT, arrival_trades(DAY, 2000, seed=8))
    trades = arrival_trades(DAY, 2000, seed=9)
    write_ticks(gcs_store, DAY, "trades", PERP, trades.take(pa.array(np.sort(np.r_[np.arange(2000), 1234]))))
    request = Request(
        "validate", DAY, DAY, data_types=("trades",), options={"checks": ["completeness", "content"]}
    )
    summary = run_validate(f"gs://{gcs_bucket}/lake", request)
    assert summary.outcomes == {"failed": 1}
    table = rp.read_report(gcs_store, DAY)
    errors = [
        (r["instrument_key"], r["check"], r["issues"]) for r in table.to_pylist() if r["status"] == "error"
    ]
    assert errors == [(PERP, "duplicate_ids", 1)]
    summary_json = rp.read_summary(gcs_store, DAY)
    assert summary_json["classes"]["present"] == 2 and summary_json["counts"]["error"] == 1


def test_grid_rendering_plain_and_terminal():
    import io

    from mdth_engine.cli.validate import render_grid
    from mdth_engine.validation.coverage import COVERAGE_SCHEMA

    days = [DAY, DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2)]
    base = {
        "venue": "BINANCE",
        "instrument_type": "SPOT_PAIR",
        "rows": 1,
        "bytes": 1,
        "status": "ok",
        "detail": "",
    }
    cells = [
        (DAY, SPOT, "trades", "present", ""),
        (DAY, SPOT, "book_snapshot_5", "empty", ""),
        (days[1], SPOT, "trades", "present", "error"),
        (days[1], SPOT, "book_snapshot_5", "present", ""),
        (days[2], SPOT, "trades", "never_attempted", ""),
        (days[2], SPOT, "book_snapshot_5", "present", "warn"),
    ]
    rows = [
        {**base, "day": d, "instrument_key": k, "data_type": t, "class": c, "content": v}
        for d, k, t, c, v in cells
    ]
    table = pa.Table.from_pylist(rows, schema=COVERAGE_SCHEMA)
    out = io.StringIO()
    render_grid(table, days, by="instrument", tty=False, out=out)
    lines = out.getvalue().splitlines()
    assert lines[3].split() == [SPOT, "#!-", "1/3"]  # empty < present; content error; never attempted
    out = io.StringIO()
    render_grid(table, days, by="data_type", tty=False, out=out)
    by_type = {ln.split()[0]: ln.split()[1] for ln in out.getvalue().splitlines()[3:5]}
    assert by_type == {"book_snapshot_5": ".#w", "trades": "#!-"}
    out = io.StringIO()
    render_grid(table, days, by="instrument", tty=True, out=out)
    assert "\u2588" in out.getvalue() and "!" in out.getvalue()
