"""LiveFeatureStream: bars closed by the clock (no next tick needed), late events, warm start from the lake,
the loopback server (token required), persisting (journal, roll into by_date, DuckDB and BigQuery bars), and
the bounded queues' policies.

Sources here are scripted (``Scripted``): they yield chosen events on a fast ``ScaledClock``, so every expected
number is known in advance.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bigquery_standin import ApiError, BigQueryStandin
from lake_builders import arrival_trades

from mdth_engine.core.errors import UsageError
from mdth_engine.core.schemas import SCHEMAS
from mdth_engine.core.timeframes import day_start_us
from mdth_engine.features.batch import build_candles
from mdth_engine.live.clock import ScaledClock
from mdth_engine.live.events import Bar, Batch, BookSnapshot, Connected, Disconnect, Notice, Trade
from mdth_engine.live.journal import pending_days
from mdth_engine.live.persist import BarWriter, bars_table
from mdth_engine.live.queues import BoundedQueue, Bus, Policy
from mdth_engine.live.serve import connect
from mdth_engine.live.sources.base import Source
from mdth_engine.live.stream import LiveFeatureStream
from mdth_engine.storage import layout
from mdth_engine.storage.parquet import read_provenance, write_table
from mdth_engine.storage.store import open_store

KEY = "BINANCE:SPOT_PAIR:BTC-USDT"
DAY = dt.date(2024, 3, 12)
SEC = 1_000_000


def at(text: str) -> int:
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int((t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds() * SEC)


class Scripted(Source):
    """Calls ``script(clock, i)`` every ``every`` wall seconds (up to ``count`` times) and yields what it
    returns; then idles until closed."""

    name = "scripted"

    def __init__(
        self,
        clock: ScaledClock,
        script: Callable[[ScaledClock, int], list[Any]],
        *,
        every: float = 0.02,
        count: int = 10**9,
        grace_us: int = SEC,
        types: frozenset[str] = frozenset({"trades", "book_snapshot_5"}),
    ) -> None:
        super().__init__([KEY], clock, grace_us)
        self.script, self.every, self.count, self.types = script, every, count, types
        self.spec = "scripted:test"
        self._closed = asyncio.Event()

    def data_types(self, key: str) -> frozenset[str]:
        return self.types

    async def batches(self) -> AsyncIterator[Batch]:
        for i in range(self.count):
            events = self.script(self.clock, i)
            if events:
                yield Batch(events)
            try:
                await asyncio.wait_for(self._closed.wait(), timeout=self.every)
                return
            except TimeoutError:
                pass
        await self._closed.wait()

    async def aclose(self) -> None:
        self._closed.set()


def trade(clock: ScaledClock, i: int, price: float = 100.0, back_us: int = 1000) -> Trade:
    now = clock.now_us()
    return Trade(KEY, now - back_us, now, price + i, 0.5 + i, "buy" if i % 2 else "sell", str(i))


def book(clock: ScaledClock, i: int) -> BookSnapshot:
    now = clock.now_us()
    return BookSnapshot(
        KEY,
        now - 500,
        now,
        (99.0, 98.0, 97.0, 96.0, 95.0),
        (1.0,) * 5,
        (101.0, 102.0, 103.0, 104.0, 105.0),
        (2.0,) * 5,
    )


# -- the clock closes bars ------------------------------------------------------------------------------


async def test_bars_close_on_the_clock_without_a_next_tick():
    clock = ScaledClock(at("2024-03-12T10:00:07Z"), 10.0)
    source = Scripted(clock, lambda c, i: [trade(c, i) for i in range(3)], count=1)
    got: list[tuple[Bar, int]] = []
    async with LiveFeatureStream(None, ["15s"], source, warm=0) as stream:
        async for bar in stream:
            got.append((bar, clock.now_us()))
            if len(got) == 2:
                break
    (first, first_seen), (second, second_seen) = got
    assert first.timestamp == at("2024-03-12T10:00:00Z") and first.partial  # the stream began at 10:00:07
    assert first.values["trade_count"] == 3 and first.values["volume"] == 0.5 + 1.5 + 2.5
    assert first.values["open"] == 100.0 and first.values["close"] == 102.0
    # Closed when the clock passed end + grace (1 s), not by a later tick (there was none), and promptly.
    assert first.timestamp_out + SEC <= first_seen < first.timestamp_out + SEC + 3 * SEC
    assert second.timestamp == first.timestamp_out and not second.partial
    assert second.values["trade_count"] == 0 and math.isnan(
        second.values["close"]
    )  # an empty bar still closes
    assert second.timestamp_out + SEC <= second_seen < second.timestamp_out + SEC + 3 * SEC


async def test_late_events_are_counted_and_left_out_of_closed_bars():
    clock = ScaledClock(at("2024-03-12T10:00:13Z"), 10.0)

    def script(c: ScaledClock, i: int) -> list[Any]:
        if i == 0:
            return [trade(c, 0)]
        if i == 6:  # clock near 10:00:19: the 10:00:00 bar closed at 10:00:16; this trade is stamped 10:00:14
            now = c.now_us()
            return [Trade(KEY, at("2024-03-12T10:00:14Z"), now, 999.0, 9.0, "buy")]
        return []

    items: list[Any] = []
    async with LiveFeatureStream(
        None, ["15s"], Scripted(clock, script, every=0.1), warm=0, events=True
    ) as stream:
        async for item in stream:
            items.append(item)
            if isinstance(item, Notice) and item.event == "late":  # reported with the next closed bars
                break
        late = stream.stats()["engine"]["late"]
    bars = [i for i in items if isinstance(i, Bar)]
    assert late == 1
    assert (
        bars[0].values["trade_count"] == 1 and bars[0].values["high"] == 100.0
    )  # the late trade is not in it
    assert bars[1].values["trade_count"] == 0  # nor moved into the next bar
    (notice,) = [i for i in items if isinstance(i, Notice) and i.event == "late"]
    assert notice.data["late_total"] == 1


# -- warm start ---------------------------------------------------------------------------------------------


def write_day_candles(lake: str, day: dt.date, timeframes: list[str]) -> dict[str, pa.Table]:
    built = build_candles(
        day,
        trades=arrival_trades(day, 3000, seed=7),
        liquidations=None,
        derivative_ticker=None,
        book=None,
        timeframes=timeframes,
    )
    store = open_store(lake)
    for tf, table in built.items():
        write_table(store, layout.candles_path(day, tf, KEY), table, {"data_type": "candles"})
    return built


@pytest.mark.parametrize(
    "start, rows_1m", [("2024-03-13T00:00:30Z", slice(1340, 1440)), ("2024-03-12T12:00:05Z", slice(620, 720))]
)
async def test_warm_start_reads_the_last_100_lake_bars_before_now(tmp_path, start, rows_1m):
    built = write_day_candles(str(tmp_path), DAY, ["15s", "1m", "24h"])
    clock = ScaledClock(at(start), 1.0)
    async with LiveFeatureStream(
        None, ["15s", "1m", "24h"], Scripted(clock, lambda c, i: []), lake=str(tmp_path)
    ) as stream:
        warm: list[Bar] = []
        async for bar in stream:
            warm.append(bar)
            if len(warm) == 100 + 100 + (1 if start.startswith("2024-03-13") else 0):
                break
        hist = stream.history(KEY, "1m")
    assert all(b.warm and not b.partial for b in warm)
    one_minute = [b for b in warm if b.timeframe == "1m"]
    expected = built["1m"].slice(rows_1m.start, 100).to_pylist()
    assert [b.values["trade_count"] for b in one_minute] == [r["trade_count"] for r in expected]
    assert [b.values["price_vwap"] for b in one_minute] == pytest.approx(
        [r["price_vwap"] for r in expected], nan_ok=True
    )
    assert one_minute[-1].timestamp_out <= at(start) and one_minute == hist[:100]
    day_bars = [b for b in warm if b.timeframe == "24h"]
    assert len(day_bars) == (
        1 if start.startswith("2024-03-13") else 0
    )  # the day bar only once the day is over


# -- serving ------------------------------------------------------------------------------------------------


async def test_the_loopback_server_wants_the_token_and_sends_what_the_stream_sends():
    clock = ScaledClock(at("2024-03-12T10:00:00Z"), 30.0)
    source = Scripted(clock, lambda c, i: [trade(c, i % 5), book(c, i)], every=0.02)
    async with LiveFeatureStream(None, ["15s"], source, warm=0, serve=True, events=True) as stream:
        url, token = stream.server_url, stream.token
        assert url.startswith("ws://127.0.0.1:") and len(token) >= 32
        for bad in ("", "wrong-token-of-some-length"):
            with pytest.raises(UsageError, match="refused the token"):
                async for _ in connect(url, bad):
                    pass
        mine: list[Bar] = []
        async for item in stream:  # let two bars close before the client connects: they are its history
            if isinstance(item, Bar):
                mine.append(item)
                if len(mine) == 2:
                    break
        received: list[dict] = []
        client = connect(url, token, timeframes=["15s"])
        async for msg in client:
            received.append(msg)
            if sum(m["kind"] == "bar" and not m.get("history") for m in received) == 2:
                break
        await client.aclose()
        async for item in stream:
            if isinstance(item, Bar):
                mine.append(item)
                if len(mine) == 4:
                    break
        counters = dict(stream.server.counters)
    assert (
        received[0]["kind"] == "hello"
        and received[0]["instruments"] == [KEY]
        and received[0]["timeframes"] == ["15s"]
    )
    history = [m for m in received if m.get("history")]
    assert [h["timestamp"] for h in history] == [b.to_dict()["timestamp"] for b in mine[:2]]
    live = [m for m in received if m["kind"] == "bar" and not m.get("history")]
    assert live == [b.to_dict() for b in mine[2:4]]  # the same bars, every feature
    assert counters["refused"] == 2


async def test_a_slow_server_client_loses_its_oldest_items_and_is_told_how_many():
    from mdth_engine.live.serve import FeatureServer

    bus = Bus()
    server = await FeatureServer(
        bus, list, lambda: {"instruments": []}, token="t" * 32, client_queue=2
    ).start()
    try:
        client = connect(server.url, "t" * 32)
        assert (await anext(client))["kind"] == "hello"
        while not any(q.name == "serve-client" for q in bus.queues):
            await asyncio.sleep(0.01)
        for i in range(10):  # faster than the client is served: its queue keeps the newest two
            await bus.publish(Notice("tick", i, str(i)))
        got = [await anext(client) for _ in range(3)]
        await client.aclose()
    finally:
        await server.stop()
    assert got[0] == {"kind": "event", "event": "dropped", "count": 8}
    assert [m["message"] for m in got[1:]] == ["8", "9"]


def test_the_server_binds_loopback_only():
    with pytest.raises(UsageError, match="loopback"):
        from mdth_engine.live.serve import FeatureServer

        FeatureServer(Bus(), list, dict, token="x" * 32, host="0.0.0.0")


# -- persisting -------------------------------------------------------------------------------------------


async def test_persist_journals_every_event_rolls_the_finished_day_and_writes_bars(tmp_path):
    lake, db = str(tmp_path / "lake"), tmp_path / "wh.duckdb"
    clock = ScaledClock(at("2024-03-12T23:59:40Z"), 60.0)
    sent: list[Any] = []
    down_up: list[int] = []

    def script(c: ScaledClock, i: int) -> list[Any]:
        events: list[Any] = [trade(c, i % 7), book(c, i)]
        if i == 2:
            events.append(Disconnect((KEY,), c.now_us(), "test drop"))
            down_up.append(events[-1].local_timestamp)
        if i == 5:
            events.append(Connected((KEY,), c.now_us(), "test"))
            down_up.append(events[-1].local_timestamp)
        sent.extend(e for e in events if e.data_type)
        return events

    source = Scripted(clock, script, every=0.02)
    bars: list[Bar] = []
    async with LiveFeatureStream(
        None,
        ["15s"],
        source,
        lake=lake,
        warm=0,
        persist=True,
        warehouse=f"duckdb:///{db}",
        journal_flush_seconds=0.2,
    ) as stream:
        async for bar in stream:
            bars.append(bar)
            if clock.now_us() > at("2024-03-13T00:01:20Z") and not any(
                d < dt.date(2024, 3, 13) for d in pending_days(stream.store)
            ):
                break
    store = open_store(lake)
    # The finished day is in by_date, sorted by arrival, exactly the events sent with that arrival day.
    day_start = day_start_us(dt.date(2024, 3, 13))
    for kind in ("trades", "book_snapshot_5"):
        path = layout.raw_path(DAY, kind, KEY)
        table = pq.read_table(store.local_path(path))
        assert table.schema.equals(SCHEMAS[kind])
        mine = [e for e in sent if e.data_type == kind and e.local_timestamp < day_start]
        assert table["local_timestamp"].cast(pa.int64()).to_pylist() == [e.local_timestamp for e in mine]
        if kind == "trades":
            assert table["price"].to_pylist() == [e.price for e in mine] and table["side"].to_pylist() == [
                e.side for e in mine
            ]
        prov = read_provenance(store, path)
        assert prov["source_url"] == "live:scripted:test"
        down, up = down_up  # the gap as the journal's status parts recorded it (still open at midnight: -1)
        assert json.loads(prov["live_gaps"]) == [[down, up if up < day_start else -1]]
    assert not list(store.list(f"{layout.STREAMING_RAW_ROOT}/day-{DAY}/"))  # its parts are gone
    # The day still running stays in parts; a clean stop wrote every event of it.
    tail = [e for e in sent if e.local_timestamp >= day_start]
    parts = [i.path for i in store.list(f"{layout.STREAMING_RAW_ROOT}/day-2024-03-13/data_type-trades/")]
    rows = pa.concat_tables([pq.read_table(store.local_path(p)) for p in parts])
    assert sorted(rows["local_timestamp"].cast(pa.int64()).to_pylist()) == [
        e.local_timestamp for e in tail if e.data_type == "trades"
    ]
    # Closed bars are in DuckDB, once each.
    con = duckdb.connect(str(db), read_only=True)
    got = con.execute(
        "SELECT instrument_key, epoch_us(timestamp), trade_count, spans_disconnect FROM live_candles_15s ORDER BY 2"
    ).fetchall()
    con.close()
    assert got == [(KEY, b.timestamp, b.values["trade_count"], b.spans_disconnect) for b in bars]
    assert any(r[3] for r in got)
    BarWriter(f"duckdb:///{db}").write(bars)  # sent again (a retry): nothing doubles
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM live_candles_15s").fetchall()[0][0] == len(bars)
    con.close()


class InsertAllStandin(BigQueryStandin):
    """The BigQuery stand-in plus ``tabledata.insertAll``, de-duplicating on ``insertId`` as BigQuery does."""

    def __init__(self) -> None:
        super().__init__()
        self.inserted: dict[str, list[dict[str, Any]]] = {}
        self.insert_requests: list[dict[str, Any]] = []

    def _route(self, method, path, query, headers, raw, record):  # type: ignore[override]
        import re

        m = re.fullmatch(r"/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)/insertAll", path)
        if m and method == "POST":
            project, dataset, table = m.groups()
            if (project, dataset, table) not in self.tables:
                raise ApiError(404, "notFound", f"Not found: Table {project}:{dataset}.{table}")
            body = record.body
            self.insert_requests.append(body)
            rows = self.inserted.setdefault(table, [])
            seen = {r["insertId"] for r in rows}
            rows.extend(r for r in body["rows"] if r["insertId"] not in seen)
            return 200, {"kind": "bigquery#tableDataInsertAllResponse"}, {}
        return super()._route(method, path, query, headers, raw, record)


def test_bigquery_gets_streaming_inserts_with_insert_ids():
    bars = [
        Bar(
            KEY,
            "1m",
            {
                "timestamp": at("2024-03-12T10:00:00Z"),
                "timestamp_out": at("2024-03-12T10:01:00Z"),
                **_features(3),
            },
        ),
        Bar(
            KEY,
            "1m",
            {
                "timestamp": at("2024-03-12T10:01:00Z"),
                "timestamp_out": at("2024-03-12T10:02:00Z"),
                **_features(0),
            },
            spans_disconnect=True,
        ),
        Bar(
            KEY,
            "1m",
            {
                "timestamp": at("2024-03-12T09:59:00Z"),
                "timestamp_out": at("2024-03-12T10:00:00Z"),
                **_features(1),
            },
            warm=True,
        ),
    ]
    with InsertAllStandin() as bq:
        writer = BarWriter(
            f"bigquery://proj/live?endpoint={bq.endpoint}", retry_initial=0.01, retry_deadline=5
        )
        assert writer.write(bars) == 2  # warm bars came from the lake: not written again
        writer.write(bars)  # a retry sends the same insert ids
        table = bq.tables[("proj", "live", "live_candles_1m")]
        rows = bq.inserted["live_candles_1m"]
    assert table.time_partitioning == {"type": "DAY", "field": "timestamp"}
    assert [r["insertId"] for r in rows] == [
        f"{KEY}|1m|{at('2024-03-12T10:00:00Z')}",
        f"{KEY}|1m|{at('2024-03-12T10:01:00Z')}",
    ]
    assert (
        len(bq.insert_requests) == 2 and bq.insert_requests[1]["rows"][0]["insertId"] == rows[0]["insertId"]
    )
    first, second = rows[0]["json"], rows[1]["json"]
    assert first["timestamp"] == "2024-03-12 10:00:00.000000 UTC" and first["day"] == "2024-03-12"
    assert (
        first["trade_count"] == 3
        and first["spans_disconnect"] is False
        and second["spans_disconnect"] is True
    )
    assert second["close"] == "NaN" and second["liquidation_count"] is None  # NaN kept as NaN, null as null


def _features(n: int) -> dict[str, Any]:
    from mdth_engine.features.spec import FEATURES, INT_FEATURES

    out: dict[str, Any] = {f.name: (float(n) if n else math.nan) for f in FEATURES}
    for name in INT_FEATURES:
        out[name] = n
    out["liquidation_count"] = None
    return out


def test_bars_table_has_the_candle_columns_and_flags():
    bar = Bar(KEY, "15s", {"timestamp": 0, "timestamp_out": 15 * SEC, **_features(2)}, partial=True)
    (table,) = bars_table([bar]).values()
    assert table.column_names[:4] == ["day", "instrument_key", "timestamp", "timestamp_out"]
    assert table.column_names[-3:] == ["spans_disconnect", "partial", "inserted_at"]
    assert table["partial"].to_pylist() == [True]


def test_a_live_table_made_before_a_feature_was_added_gains_its_column(tmp_path):
    import duckdb

    from mdth_engine.features.spec import FEATURE_NAMES

    newest = FEATURE_NAMES[-1]
    path = tmp_path / "wh.duckdb"
    writer = BarWriter(f"duckdb:///{path}")
    old = Bar(KEY, "1m", {"timestamp": 0, "timestamp_out": 60 * SEC, **_features(1)})
    assert writer.write([old]) == 1
    con = duckdb.connect(str(path))
    con.execute(f'ALTER TABLE live_candles_1m DROP COLUMN "{newest}"')  # the table of an older release
    con.close()
    new = Bar(KEY, "1m", {"timestamp": 60 * SEC, "timestamp_out": 120 * SEC, **_features(2)})
    assert writer.write([new, old]) == 2
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute(
            f'SELECT epoch_us(timestamp), "{newest}", "open" FROM live_candles_1m ORDER BY 1'
        ).fetchall()
    finally:
        con.close()
    assert rows == [(0, None, 1.0), (60 * SEC, 2.0, 2.0)]  # the old row kept (null), the new one filled


# -- queues -------------------------------------------------------------------------------------------------


async def test_drop_oldest_counts_what_it_drops_and_block_waits():
    display = BoundedQueue("display", maxsize=3, policy=Policy.DROP_OLDEST)
    for i in range(5):
        await display.put(i)
    assert [await display.get() for _ in range(3)] == [2, 3, 4]
    stats = display.stats()
    assert (stats["in"], stats["dropped"], stats["max_depth"]) == (5, 2, 3)

    persist = BoundedQueue("persist", maxsize=2, policy=Policy.BLOCK)
    await persist.put(1)
    await persist.put(2)
    blocked = asyncio.create_task(persist.put(3))
    await asyncio.sleep(0.05)
    assert not blocked.done() and persist.stats()["lag_ms"] >= 40  # the producer waits; nothing is dropped
    assert await persist.get() == 1
    await asyncio.wait_for(blocked, 1)
    assert [await persist.get(), await persist.get()] == [2, 3] and persist.dropped == 0
    persist.close()
    with pytest.raises(StopAsyncIteration):
        await persist.get()


async def test_a_slow_display_drops_while_a_blocking_consumer_holds_the_engine_back():
    bus = Bus()
    display = bus.subscribe("display", 2, Policy.DROP_OLDEST)
    persist = bus.subscribe("persist", 2, Policy.BLOCK)
    publisher = asyncio.create_task(_publish_all(bus, range(6)))
    await asyncio.sleep(0.05)
    assert not publisher.done()  # waiting on the persist queue
    got = []
    while len(got) < 6:
        got.append(await persist.get())
    await asyncio.wait_for(publisher, 1)
    assert got == list(range(6)) and persist.dropped == 0
    assert display.dropped == 4 and display.get_all() == [4, 5]


async def _publish_all(bus: Bus, items) -> None:
    for item in items:
        await bus.publish(item)


def test_journal_rows_keep_nan_and_the_tick_schema():
    from mdth_engine.live.journal import events_table

    t = Trade(KEY, 5, 6, 1.5, float("nan"), "buy", "")
    table = events_table("trades", [t])
    assert table.schema.equals(SCHEMAS["trades"]) and np.isnan(table["amount"].to_numpy()[0])
    assert table["id"].to_pylist() == [None]
