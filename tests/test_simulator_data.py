"""The simulated market data itself: CSV dialect, statistical sanity, day split, determinism, instrument churn.

Files are generated in-process with ``dataset_bytes`` (no HTTP); the server tests cover serving them.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import hashlib
import io
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from mdth_engine.core.schemas import CSV_COLUMNS
from mdth_engine.core.timeframes import US_PER_DAY, day_start_us
from mdth_engine.simulator import paths
from mdth_engine.simulator.config import MODEL_VERSION, SCALES
from mdth_engine.simulator.datasets import dataset_bytes

DAY = dt.date(2024, 3, 5)


@functools.lru_cache(maxsize=128)
def raw(exchange: str, data_type: str, day: dt.date, symbol: str, scale: str = "small") -> bytes:
    return gzip.decompress(dataset_bytes(exchange, data_type, day, symbol, SCALES[scale], scale))


def table(exchange: str, data_type: str, day: dt.date, symbol: str, scale: str = "small") -> pa.Table:
    text = raw(exchange, data_type, day, symbol, scale)
    assert text, f"{exchange} {data_type} {symbol} {day} is empty"
    string_cols = {"exchange", "symbol", "id", "side", "type", "underlying_index"}
    int_cols = {"timestamp", "local_timestamp", "funding_timestamp", "expiration"}
    types = {
        c: pa.string()
        if c in string_cols
        else pa.int64()
        if c in int_cols
        else pa.bool_()
        if c == "is_snapshot"
        else pa.float64()
        for c in CSV_COLUMNS[data_type]
    }
    options = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
    return pacsv.read_csv(io.BytesIO(text), convert_options=options)


def col(t: pa.Table, name: str) -> np.ndarray:
    return t.column(name).to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------------------------------------------------
# CSV dialect


@pytest.mark.parametrize(
    ("exchange", "data_type", "symbol"),
    [
        ("binance-futures", "trades", "BTCUSDT"),
        ("bybit", "trades", "BTCUSD"),
        ("binance-futures", "book_snapshot_5", "BTCUSDT"),
        ("binance", "book_ticker", "ETHBTC"),
        ("okex-swap", "derivative_ticker", "BTC-USDT-SWAP"),
        ("deribit", "options_chain", "OPTIONS"),
        ("deribit", "incremental_book_L2", "ETH-PERPETUAL"),
    ],
)
def test_csv_dialect_is_tardis(exchange: str, data_type: str, symbol: str) -> None:
    text = raw(exchange, data_type, DAY, symbol, "tiny" if data_type == "incremental_book_L2" else "small")
    lines = text.decode().split("\n")
    assert lines[0] == ",".join(CSV_COLUMNS[data_type])
    assert lines[-1] == "" and all(lines[1:-1]), "LF line endings, one trailing newline, no blank lines"
    width = len(CSV_COLUMNS[data_type])
    body = lines[1:-1]
    assert all(line.count(",") == width - 1 for line in body)
    assert b'"' not in text and b"\r" not in text and b" " not in text
    cells = [c for line in body[:2000] for c in line.split(",")[2:]]
    assert not [c for c in cells if re.fullmatch(r"-?[0-9.]+[eE][-+]?[0-9]+", c)], "no exponent notation"
    assert "-0" not in cells
    assert all(line.startswith(f"{exchange},") for line in body)


def test_empty_day_is_an_empty_gzip() -> None:
    # bybit had a whole-day collector outage on 2024-02-20 (listed in incidentReports)
    data = dataset_bytes("bybit", "trades", dt.date(2024, 2, 20), "BTCUSDT")
    assert gzip.decompress(data) == b""
    # a symbol before its listing day: empty as well, not an error
    assert gzip.decompress(dataset_bytes("binance", "trades", dt.date(2020, 8, 1), "SOLUSDT")) == b""
    assert gzip.decompress(dataset_bytes("binance", "trades", dt.date(2020, 8, 12), "SOLUSDT")) != b""


# ---------------------------------------------------------------------------------------------------------
# Statistical sanity


@pytest.mark.parametrize(
    ("exchange", "symbol"),
    [
        ("binance-futures", "BTCUSDT"),
        ("binance", "ETHBTC"),
        ("deribit", "BTC-PERPETUAL"),
        ("bybit", "ETHUSDT"),
        ("okex-swap", "BTC-USD-SWAP"),
    ],
)
def test_trades_and_quotes_are_consistent(exchange: str, symbol: str) -> None:
    trades, quotes = table(exchange, "trades", DAY, symbol), table(exchange, "quotes", DAY, symbol)
    d0 = day_start_us(DAY)
    for t in (trades, quotes):
        local = col(t, "local_timestamp")
        assert np.all(np.diff(local) >= 0), "local_timestamp is monotonic"
        assert local.min() >= d0 and local.max() < d0 + US_PER_DAY, (
            "rows belong to the day by local_timestamp"
        )
        lat = local - col(t, "timestamp")
        assert lat.min() > 0 and 500 < np.median(lat) < 50_000, "exchange time a few ms before arrival"
    bid, ask = col(quotes, "bid_price"), col(quotes, "ask_price")
    assert np.all(bid < ask), "no crossed books"
    assert np.all(col(quotes, "bid_amount") > 0) and np.all(col(quotes, "ask_amount") > 0)
    assert np.all(col(trades, "amount") > 0) and np.all(col(trades, "price") > 0)
    # The book in force at each trade's exchange time: the trade is at its bid or ask.
    order = np.argsort(col(quotes, "timestamp"), kind="stable")
    q_ts = col(quotes, "timestamp")[order]
    i = np.searchsorted(q_ts, col(trades, "timestamp"), side="right") - 1
    assert np.all(i >= 0)
    price = col(trades, "price")
    assert np.all((price >= bid[order][i]) & (price <= ask[order][i])), "trades at or between bid and ask"
    buys = np.mean(col(trades, "side") == "buy")
    assert abs(buys - 0.5) < 0.1 + 3 / np.sqrt(len(trades)), f"buy share {buys:.2f} of {len(trades)}"
    assert set(col(trades, "side")) == {"buy", "sell"}


def test_trades_are_bursty_and_heavy_tailed() -> None:
    t = table("binance-futures", "trades", DAY, "BTCUSDT", "medium")
    ts = col(t, "timestamp")
    per_minute = np.bincount((ts - day_start_us(DAY)) // 60_000_000, minlength=1440)
    # A Poisson process has variance == mean; clustered arrivals are strongly over-dispersed.
    assert per_minute.var() > 5 * per_minute.mean()
    # Sweeps: several fills share one exchange millisecond.
    assert np.mean(np.diff(ts) == 0) > 0.15
    amount = col(t, "amount")
    assert np.percentile(amount, 99.9) > 20 * np.median(amount), "heavy-tailed sizes"
    assert 50_000 < len(t) < 250_000


def test_book_snapshots_are_ordered_and_match_quotes() -> None:
    snap = table("binance-futures", "book_snapshot_5", DAY, "BTCUSDT")
    asks = np.stack([col(snap, f"asks[{k}].price") for k in range(5)], axis=1)
    bids = np.stack([col(snap, f"bids[{k}].price") for k in range(5)], axis=1)
    assert np.all(np.diff(asks, axis=1) > 0) and np.all(np.diff(bids, axis=1) < 0)
    assert np.all(bids[:, 0] < asks[:, 0])
    quotes = table("binance-futures", "quotes", DAY, "BTCUSDT")
    by_local = dict(
        zip(
            col(quotes, "local_timestamp"),
            zip(col(quotes, "bid_price"), col(quotes, "ask_price"), strict=True),
            strict=True,
        )
    )
    common = [i for i, lt in enumerate(col(snap, "local_timestamp")) if lt in by_local]
    assert len(common) > 0.9 * len(quotes)
    for i in common[:500]:
        assert by_local[col(snap, "local_timestamp")[i]] == (bids[i, 0], asks[i, 0])
    # Exchange time is occasionally out of order (latency spikes), local time never.
    assert (np.diff(col(snap, "timestamp")) < 0).sum() >= 1


def _replay_l2(l2: pa.Table):
    """Yield (local_timestamp, asks, bids) after each message, applying Tardis's reconstruction rules."""
    book: dict[str, dict[float, float]] = {"ask": {}, "bid": {}}
    local, snap, side = col(l2, "local_timestamp"), col(l2, "is_snapshot"), col(l2, "side")
    price, amount = col(l2, "price"), col(l2, "amount")
    prev_snap = False
    for i in range(len(l2)):
        if snap[i] and not prev_snap:
            book = {"ask": {}, "bid": {}}
        prev_snap = bool(snap[i])
        if amount[i] == 0:
            book[side[i]].pop(price[i], None)
        else:
            book[side[i]][price[i]] = amount[i]
        if i + 1 == len(l2) or local[i + 1] != local[i]:
            yield local[i], sorted(book["ask"].items())[:25], sorted(book["bid"].items(), reverse=True)[:25]


def test_incremental_l2_rebuilds_book_snapshot_25() -> None:
    l2 = table("deribit", "incremental_book_L2", DAY, "BTC-PERPETUAL", "tiny")
    snap = table("deribit", "book_snapshot_25", DAY, "BTC-PERPETUAL", "tiny")
    assert col(l2, "is_snapshot")[0], "every file starts with a snapshot"
    assert (col(l2, "amount") == 0).any(), "amount 0 removes a level"
    rows = {lt: i for i, lt in enumerate(col(snap, "local_timestamp"))}
    levels = {
        k: (
            col(snap, f"asks[{k}].price"),
            col(snap, f"asks[{k}].amount"),
            col(snap, f"bids[{k}].price"),
            col(snap, f"bids[{k}].amount"),
        )
        for k in range(25)
    }
    checked = 0
    for local, asks, bids in _replay_l2(l2):
        i = rows.get(local)
        if i is None:
            continue
        for k in range(25):
            ap, aa, bp, ba = (v[i] for v in levels[k])
            assert (ap, aa) == asks[k] if k < len(asks) else np.isnan(ap)
            assert (bp, ba) == bids[k] if k < len(bids) else np.isnan(bp)
        checked += 1
    assert checked > 0.95 * len(snap)


def test_derivative_ticker_funding_and_open_interest() -> None:
    t = table("binance-futures", "derivative_ticker", DAY, "BTCUSDT")
    ts, fts = col(t, "timestamp"), col(t, "funding_timestamp")
    assert np.all(fts > ts) and np.all(fts - ts <= 8 * 3_600_000_000)
    assert set(np.unique((fts - day_start_us(DAY)) // 3_600_000_000)) == {8, 16, 24}, "funding every 8 hours"
    assert np.all(np.isnan(col(t, "predicted_funding_rate")))  # Binance publishes no predicted rate
    assert np.all(col(t, "open_interest") > 0) and np.all(np.abs(col(t, "funding_rate")) < 0.01)
    mark, index = col(t, "mark_price"), col(t, "index_price")
    assert np.all(np.abs(mark / index - 1) < 0.01)
    deribit = table("deribit", "derivative_ticker", DAY, "BTC-PERPETUAL")
    assert np.all(np.isnan(col(deribit, "funding_timestamp")))  # continuous funding: no funding time
    future = table("deribit", "derivative_ticker", DAY, "BTC-29MAR24")
    assert np.all(np.isnan(col(future, "funding_rate")))
    assert np.all(col(future, "mark_price") > col(future, "index_price")), "contango before expiry"
    bybit = table("bybit", "derivative_ticker", DAY, "BTCUSDT")
    assert not np.isnan(col(bybit, "predicted_funding_rate")).any()


def test_liquidations_cluster_at_extremes() -> None:
    t = table("binance-futures", "liquidations", DAY, "BTCUSDT", "full")
    assert len(t) > 100 and t.column("id").null_count == len(t), "empty id cells: Binance sends none"
    ts, buy = col(t, "timestamp"), col(t, "side") == "buy"
    now = paths.log_spot("BTC", ts)
    before = paths.log_spot("BTC", ts - 60_000_000)
    # side=buy: shorts liquidated, after a rise; side=sell: longs liquidated, after a fall.
    agree = np.where(buy, now > before, now < before)
    assert agree.mean() > 0.9


def test_options_chain_shape() -> None:
    t = table("deribit", "options_chain", DAY, "OPTIONS")
    symbols = set(col(t, "symbol"))
    assert 300 < len(symbols) < 2000
    assert {s.split("-")[0] for s in symbols} >= {"BTC", "ETH", "XRP_USDC"}
    assert any("D" in s.split("-")[2] for s in symbols if s.startswith("XRP_USDC")), (
        "linear options use d strikes"
    )
    delta, kind = col(t, "delta"), col(t, "type")
    assert np.all((delta >= -1) & (delta <= 1))
    assert np.all(delta[kind == "call"] >= 0) and np.all(delta[kind == "put"] <= 0)
    exp = col(t, "expiration")
    assert np.all(exp % US_PER_DAY == 8 * 3_600_000_000), "expiries at 08:00 UTC"
    assert len(np.unique(exp)) >= 8
    assert np.all(col(t, "mark_iv") > 5) and np.all(col(t, "mark_iv") < 500), "IV in percent"
    bid, ask = col(t, "bid_price"), col(t, "ask_price")
    both = ~np.isnan(bid) & ~np.isnan(ask)
    assert np.all(bid[both] < ask[both])
    assert np.isnan(bid).any() and np.isnan(ask).any(), "empty sides, as in real files"
    assert np.all(col(t, "underlying_price") > 0) and np.all(col(t, "gamma") >= 0)
    und = col(t, "underlying_index")
    assert any(u.startswith("SYN.") for u in und) and any(not u.startswith("SYN.") for u in und)
    # The smile: for one expiry, the lowest strike trades at a higher IV than the strike nearest spot.
    btc = np.array([s.startswith("BTC-") for s in col(t, "symbol")])
    far = exp == np.max(exp[btc])
    strikes, ivs, spot = (
        col(t, "strike_price")[btc & far],
        col(t, "mark_iv")[btc & far],
        paths.open_price("BTC", DAY),
    )
    assert ivs[np.argmin(strikes)] > ivs[np.argmin(np.abs(strikes - spot))]
    # the first rows of a day may carry an exchange time from the day before
    assert np.all(col(t, "local_timestamp") >= day_start_us(DAY))


def test_instrument_set_changes_day_to_day() -> None:
    a = set(col(table("deribit", "options_chain", DAY, "OPTIONS"), "symbol"))
    b = set(col(table("deribit", "options_chain", DAY + dt.timedelta(days=1), "OPTIONS"), "symbol"))
    assert a - b and b - a, "options expire and new ones list"
    expired = next(s for s in a - b if s.startswith("BTC-"))
    assert expired.split("-")[1] == "5MAR24", "what disappears is what expired at 08:00 on that day"


def test_tick_size_change_on_its_date() -> None:
    before = col(table("binance-futures", "trades", dt.date(2021, 2, 28), "BTCUSDT", "tiny"), "price")
    after = col(table("binance-futures", "trades", dt.date(2021, 3, 2), "BTCUSDT", "tiny"), "price")
    assert np.all(np.abs(after * 10 - np.round(after * 10)) < 1e-6), "priceIncrement 0.1 after 2021-03-01"
    assert np.mean(np.abs(before * 10 - np.round(before * 10)) > 1e-6) > 0.5, "0.01 before"


def test_day_split_and_ids_run_on_across_days() -> None:
    d1, d2 = dt.date(2024, 5, 6), dt.date(2024, 5, 7)
    t1, t2 = (
        table("binance-futures", "trades", d1, "BTCUSDT"),
        table("binance-futures", "trades", d2, "BTCUSDT"),
    )
    ids = np.concatenate([col(t1, "id"), col(t2, "id")]).astype(np.int64)
    assert np.all(np.diff(np.sort(ids)) == 1), "no trade lost or doubled at the day boundary"
    assert col(t1, "local_timestamp").max() < day_start_us(d2) <= col(t2, "local_timestamp").min()
    # The options chain opens with each option's last ticker from before midnight (as in real files).
    chain = table("deribit", "options_chain", d2, "OPTIONS")
    early = col(chain, "timestamp") < day_start_us(d2)
    assert early.sum() > 100 and np.all(col(chain, "local_timestamp") >= day_start_us(d2))
    assert np.all(col(chain, "timestamp")[early] > day_start_us(d2) - 5_000_000)


def test_incident_leaves_a_silence() -> None:
    day = dt.date(2023, 3, 24)  # binance incident 12:00-13:45 UTC
    local = col(table("binance", "trades", day, "BTCUSDT"), "local_timestamp")
    start, end = (
        day_start_us(day) + 12 * 3_600_000_000,
        day_start_us(day) + 13 * 3_600_000_000 + 2_700_000_000,
    )
    assert not ((local >= start) & (local < end)).any()
    assert (local < start).any() and (local >= end).any()
    l2 = table("binance", "incremental_book_L2", day, "ETHBTC", "tiny")
    after = np.nonzero(col(l2, "local_timestamp") >= end)[0][0]
    assert col(l2, "is_snapshot")[after], "the feed restarts with a snapshot after the outage"


def test_grouped_file_is_the_union_of_its_instruments() -> None:
    grouped = raw("binance", "trades", DAY, "SPOT").decode().split("\n")[1:-1]
    singles: list[str] = []
    for symbol in ("BTCUSDT", "ETHUSDT", "ETHBTC", "XRPUSDT", "SOLUSDT", "BTCFDUSD"):
        singles += raw("binance", "trades", DAY, symbol).decode().split("\n")[1:-1]
    assert sorted(grouped) == sorted(singles)
    local = [int(line.split(",")[3]) for line in grouped]
    assert local == sorted(local)
    assert "BTCBUSD" not in {line.split(",")[1] for line in grouped}, "delisted in 2023"


def test_scale_sets_volume() -> None:
    tiny = len(table("binance-futures", "trades", DAY, "BTCUSDT", "tiny"))
    small = len(table("binance-futures", "trades", DAY, "BTCUSDT", "small"))
    assert 1_000 < small < 20_000 and 6 < small / tiny < 14


def _digest_script(items: list[tuple[str, str, str, str]]) -> str:
    return (
        "import datetime as dt, hashlib\n"
        "from mdth_engine.simulator.datasets import dataset_bytes\n"
        f"for ex, t, day, sym in {items!r}:\n"
        "    print(hashlib.sha256(dataset_bytes(ex, t, dt.date.fromisoformat(day), sym)).hexdigest())\n"
        "from mdth_engine.core.shutdown import leave\nleave(0)\n"
    )


def test_same_bytes_every_run_and_process() -> None:
    items = [
        ("binance-futures", "trades", "2024-03-05", "BTCUSDT"),
        ("deribit", "options_chain", "2024-03-05", "OPTIONS"),
    ]
    here = [
        hashlib.sha256(dataset_bytes(ex, t, dt.date.fromisoformat(d), s)).hexdigest() for ex, t, d, s in items
    ]
    again = [
        hashlib.sha256(dataset_bytes(ex, t, dt.date.fromisoformat(d), s)).hexdigest() for ex, t, d, s in items
    ]
    out = subprocess.run(
        [sys.executable, "-c", _digest_script(items)], capture_output=True, text=True, check=True
    )
    assert here == again == out.stdout.split()
    assert (
        here[0]
        != hashlib.sha256(
            dataset_bytes("binance-futures", "trades", dt.date(2024, 3, 6), "BTCUSDT")
        ).hexdigest()
    )


# sha256 of the CSV inside tiny-scale files, computed once; the gzip around it comes from python-isal (or zlib),
# whose compressed bytes may differ between library versions, so the content is what is pinned.
PINNED_CSV_SHA256 = {
    "binance-futures/trades/BTCUSDT": "e735f8db6eecd6f4b18c42c4bcf4fe328f098be8050100b88847b1ab20f494d2",
    "deribit/options_chain/OPTIONS": "0acef2864728ab09fcc60c9855c1395dd851397c417b5b291116fbbe3c3f1330",
    "deribit/book_snapshot_5/BTC-PERPETUAL": "da30acdee3eec099891fbdf64b882bdee4d463cd1e4fb97e63f3405960e98c4f",
    "okex-swap/derivative_ticker/BTC-USDT-SWAP": "d4419f4c1f3d9eaf9a681658e4633af3eddade77cc0ff27ca0d718f11c9b693c",
}


@pytest.mark.parametrize("file", sorted(PINNED_CSV_SHA256))
def test_same_bytes_on_every_machine(file: str) -> None:
    assert MODEL_VERSION == "m2", "the market model changed: recompute PINNED_CSV_SHA256"
    exchange, data_type, symbol = file.split("/")
    assert (
        hashlib.sha256(raw(exchange, data_type, DAY, symbol, "tiny")).hexdigest() == PINNED_CSV_SHA256[file]
    )
