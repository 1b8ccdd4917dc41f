"""The sparse-read goal on GCS (the emulator, bytes and requests counted by its proxy): 20 windows of 2 minutes
over a full-scale day of trades fetch under 5% of the file's bytes in few GETs, and return exactly the rows of a
full read.

The day is ~2M trades (the simulator's full-scale BTCUSDT day), minute activity lognormal like a real market,
written with the download stage's trades layout (``stages.download.tick_write_options``: 64k-row row groups,
1024-row pages with a page index, delta-encoded timestamps).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from lake_builders import DAY, SPOT, arrival_trades, write_master, write_ticks

from mdth_engine.api import Lake
from mdth_engine.core.timeframes import US_PER_DAY, US_PER_SECOND, day_start_us
from mdth_engine.reader.footer import FOOTERS
from mdth_engine.stages.download import ROW_GROUP_ROWS

FULL_SCALE_TRADES = 2_000_000
PAGE_ROWS = 1024
MINUTE = 60 * US_PER_SECOND


@pytest.fixture(scope="module")
def full_day() -> pa.Table:
    return arrival_trades(DAY, FULL_SCALE_TRADES, seed=2024, bursty=True)


def test_twenty_two_minute_windows_fetch_under_5_percent_on_gcs(gcs_store, gcs_emulator, full_day):
    write_master(gcs_store, DAY, [SPOT])
    path = write_ticks(
        gcs_store, DAY, "trades", SPOT, full_day, row_group_size=ROW_GROUP_ROWS, page_rows=PAGE_ROWS
    )
    size = gcs_store.stat(path).size
    rng = np.random.default_rng(7)
    start = day_start_us(DAY)
    centers = start + MINUTE + rng.integers(0, US_PER_DAY - 2 * MINUTE, 20)
    times = [np.datetime64(int(t), "us") for t in centers]
    gets = gcs_emulator.get_requests
    assert gcs_store.get_range(path, 0, 4) == b"PAR1" and gcs_emulator.get_requests == gets + 1  # the counter
    lake = Lake(gcs_store.url)
    FOOTERS.clear()  # a cold reader: the footer and page indexes are part of the bill
    served, read, gets = gcs_emulator.bytes_served, gcs_store.bytes_read, gcs_emulator.get_requests
    got = lake.sparse_ticks(SPOT, "trades", times, buffer="1m")
    served, read = gcs_emulator.bytes_served - served, gcs_store.bytes_read - read
    gets = gcs_emulator.get_requests - gets
    print(f"\nsparse: {served / size:.2%} of {size / 1e6:.1f} MB served in {gets} GETs, {got.num_rows} rows")
    assert served < 0.05 * size and read < served
    # Few requests: a window's pages of one column are adjacent, so coalesced they are one GET per column
    # (two for a window across row groups, allowed for a quarter of them), plus a fixed allowance for the
    # footer, the page indexes and metadata look-ups. Page by page, uncoalesced, it would be ~250 GETs.
    columns = full_day.num_columns
    assert gets <= len(times) * columns * 5 // 4 + 24, gets
    # Exactly the rows of each window, in file order, under its query time.
    stamps = full_day["timestamp"].cast(pa.int64())
    for t in centers:
        window = pc.and_(pc.greater_equal(stamps, int(t) - MINUTE), pc.less(stamps, int(t) + MINUTE))
        part = got.filter(pc.equal(got["query_time"].cast(pa.int64()), int(t))).drop_columns(["query_time"])
        assert part.equals(full_day.filter(window))
    assert got.num_rows > 0.02 * FULL_SCALE_TRADES  # 40 minutes of a day: the windows are not empty ones
