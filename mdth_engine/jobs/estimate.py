"""Expected bytes of one download unit, so shards can be balanced by work rather than by count or hash.

The best guess is the size of the same (data type, instrument) file on earlier days already in the lake:
the median over the 3 most recent of the last 7 days, else of the latest earlier days seen with files of that
type (so a month-long backfill keeps using the month before). One listing per (day, data type), cached. Without one, a table of typical daily
sizes per data type and instrument type, scaled up for the BTC/ETH majors.
"""

from __future__ import annotations

import datetime as dt
import statistics
import threading
import time
from collections import OrderedDict
from typing import Any

from mdth_engine.storage import layout

MB = 1024 * 1024

# Typical compressed daily file sizes of a mid-cap instrument (bytes); majors get _MAJOR_FACTOR on top.
DEFAULT_BYTES: dict[tuple[str, str], int] = {
    ("trades", "SPOT_PAIR"): 6 * MB,
    ("trades", "PERPETUAL"): 15 * MB,
    ("trades", "FUTURE"): 2 * MB,
    ("trades", "OPTION"): 20 * 1024,
    ("book_snapshot_5", "SPOT_PAIR"): 25 * MB,
    ("book_snapshot_5", "PERPETUAL"): 40 * MB,
    ("book_snapshot_5", "FUTURE"): 12 * MB,
    ("book_snapshot_5", "OPTION"): 1 * MB,
    ("book_snapshot_25", "SPOT_PAIR"): 90 * MB,
    ("book_snapshot_25", "PERPETUAL"): 140 * MB,
    ("book_snapshot_25", "FUTURE"): 40 * MB,
    ("quotes", "SPOT_PAIR"): 30 * MB,
    ("quotes", "PERPETUAL"): 45 * MB,
    ("quotes", "FUTURE"): 10 * MB,
    ("quotes", "OPTION"): 2 * MB,
    ("book_ticker", "SPOT_PAIR"): 40 * MB,
    ("book_ticker", "PERPETUAL"): 60 * MB,
    ("derivative_ticker", "PERPETUAL"): 4 * MB,
    ("derivative_ticker", "FUTURE"): 2 * MB,
    ("derivative_ticker", "OPTION"): 200 * 1024,
    ("liquidations", "PERPETUAL"): 150 * 1024,
    ("liquidations", "FUTURE"): 20 * 1024,
    ("options_chain", "OPTION_CHAIN"): 1500 * MB,
    ("incremental_book_L2", "SPOT_PAIR"): 300 * MB,
    ("incremental_book_L2", "PERPETUAL"): 450 * MB,
    ("incremental_book_L2", "FUTURE"): 120 * MB,
}
# When neither the data type nor the pair is in the table.
FALLBACK_BYTES = 5 * MB
_MAJOR_FACTOR = {"BTC": 20.0, "ETH": 10.0}  # BTC pairs trade 20-100x a mid-cap alt
LOOKBACK_DAYS = 7
SAMPLE_DAYS = 3  # the median of the file's size on up to this many earlier days: one odd day does not skew it

# A unit whose every output is already in the lake costs a footer check, not a download: a rerun after a partial
# backfill balances what is left to fetch.
PRESENT_BYTES = 64 * 1024

_CACHE_TTL_S = 120.0
_CACHE_MAX = 4096


class _TtlCache:
    """A small LRU with expiry: listings of earlier days barely change while one plan is being made."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple, tuple[float, Any]] = OrderedDict()

    def get_or(self, key: tuple, make: Any) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and now - hit[0] < _CACHE_TTL_S:
                self._items.move_to_end(key)
                return hit[1]
        value = make()
        with self._lock:
            self._items[key] = (now, value)
            self._items.move_to_end(key)
            while len(self._items) > _CACHE_MAX:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_cache = _TtlCache()
# (lake, data type) -> the latest few days found holding files of that type, newest first.
_latest_days: dict[tuple[str, str], list[dt.date]] = {}


def clear_cache() -> None:
    """Forget cached listings (after the lake changed under a long-lived process)."""
    _cache.clear()
    _latest_days.clear()


def default_bytes(data_type: str, instrument_type: str, symbol: str = "") -> int:
    """The table's guess for one daily file, scaled for BTC/ETH instruments."""
    base = DEFAULT_BYTES.get((data_type, instrument_type.upper()), FALLBACK_BYTES)
    text = symbol.upper().rsplit(":", 1)[-1]
    if instrument_type.upper() == "OPTION_CHAIN":  # the table's chain is BTC's already; others are smaller
        return base if not text or text.startswith(("BTC", "OPTIONS")) else base // 2
    for asset, factor in _MAJOR_FACTOR.items():
        if text.startswith(asset):
            return int(base * factor)
    return base


def _sizes(store: Any, day: dt.date, data_type: str) -> dict[str, int]:
    """instrument_key -> bytes of every file of one (day, data type), from one listing."""
    prefix = layout.raw_dir(day, data_type) + "/"

    def make() -> dict[str, int]:
        out: dict[str, int] = {}
        for info in store.list(prefix):
            name = info.path[len(prefix) :]
            if "/" not in name and name.endswith(".parquet"):
                out[name[: -len(".parquet")]] = info.size
        return out

    return _cache.get_or((store.url, "sizes", day, data_type), make)


def present_keys(store: Any, day: dt.date, data_type: str) -> set[str]:
    """Instrument keys whose (day, data type) file is already in the lake (the listing estimates share)."""
    return set(_sizes(store, day, data_type))


def _keys(store: Any, day: dt.date) -> dict[tuple[str, str], list[str]]:
    """(tardis exchange, tardis symbol) -> instrument keys, from that day's instrument master (3 columns)."""

    def make() -> dict[tuple[str, str], list[str]]:
        from mdth_engine.storage.parquet import read_whole

        path = layout.instruments_path(day)
        if not store.exists(path):
            return {}
        columns = ["tardis_exchange", "tardis_symbol", "instrument_key"]
        try:
            with store.open_read(path) as handle:
                table = read_whole(handle, columns=columns)
        except Exception:  # a master we cannot read only costs us the better estimate
            return {}
        out: dict[tuple[str, str], list[str]] = {}
        for ex, sym, key in zip(*(table[c].to_pylist() for c in columns), strict=True):
            if ex and sym and key:
                out.setdefault((ex, sym.upper()), []).append(key)
        return out

    return _cache.get_or((store.url, "keys", day), make)


def estimate_bytes(
    store: Any,
    data_type: str,
    instrument_type: str,
    exchange: str,
    symbol: str,
    day: dt.date,
    *,
    lookback: int = LOOKBACK_DAYS,
) -> int:
    """Expected bytes of the (data type, instrument) file of ``day`` (median of up to 3 earlier days' sizes).

    ``symbol`` is a Tardis symbol (mapped to instrument keys through an earlier day's master) or an instrument
    key. Grouped sources (an options chain) sum every file they produced.
    """
    window = [day - dt.timedelta(days=back) for back in range(1, lookback + 1)]
    seen = _latest_days.setdefault((store.url, data_type), [])
    # a backfill beyond the window: the latest earlier days seen with files of this type
    days = window + [d for d in seen if d < window[-1]]
    found: list[int] = []
    for earlier in days:
        sizes = _sizes(store, earlier, data_type)
        if not sizes:
            continue
        if earlier not in seen:
            seen.append(earlier)
            seen.sort(reverse=True)
            del seen[SAMPLE_DAYS:]
        if symbol.count(":") == 2:
            keys = [symbol]
        else:
            keys = _keys(store, earlier).get((exchange, symbol.upper()), [])
        hit = [sizes[k] for k in keys if k in sizes]
        if hit:
            found.append(sum(hit))
            if len(found) == SAMPLE_DAYS:
                break
    if found:
        return max(1, int(statistics.median(found)))
    return default_bytes(data_type, instrument_type, symbol)
