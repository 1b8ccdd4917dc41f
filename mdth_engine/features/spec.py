"""The one feature specification every candle producer implements (DESIGN.md section 6).

The batch path (``batch.py``, numpy over whole days) and the incremental path (``incremental.py``, live) both
implement exactly this list; a test replays history through the live path and requires the batch numbers.

Time semantics (all timestamps are microseconds since the epoch, UTC):

- Buckets are UTC-aligned, left-closed ``[start, end)``, labelled by ``timestamp`` = start; ``timestamp_out``
  = end (a candle is never available before its bucket has ended: point-in-time safe). The grid is dense:
  every bucket of the day has a row.
- Event data (trades, liquidations, derivative_ticker) is bucketed by exchange ``timestamp``; rows whose
  timestamp is outside the day are not part of the day's candles. Rows with a NaN/null price or amount are
  ignored. Within a bucket, "first"/"last" mean smallest/largest exchange timestamp, ties broken by arrival
  (file) order; sums accumulate in arrival order (so batch and live add in the same order).
- Trade sides: ``buy``/``sell`` is the taker side; ``unknown`` (or null) counts in volume, trade_count and
  VWAP but in neither buy nor sell volume. Liquidations: ``buy`` = a short was liquidated (Tardis); an
  unknown side counts in ``liquidation_count`` only.
- State data (book_snapshot_5, options_chain) is applied in arrival (file) order. A row takes effect at its
  exchange timestamp, or at the latest timestamp already applied if that is later (a row can never rewind
  time: its book state is the newer one even if the exchange stamped it earlier). Rows before the day give
  the state in force when the day starts. "At bucket close" = the state after the last row whose effective
  time is at or before the bucket end (so a row stamped exactly 24:00, from the next day's file, still
  counts for the day's last close). Time-weighted means weight each state by how long it was in force in
  the bucket, counting only time when the value was defined (before the first row nothing is weighted).
- Option chains: per option symbol the last row at bucket close is its state (no staleness limit); rows
  with a type other than call/put or without expiration never qualify; IVs are as Tardis writes them
  (percent).
- Live (``incremental``): identical numbers when every event reaches it before the clock closes its bucket;
  an event whose bucket is already closed is counted as late and dropped.
- Timeframes build on each other (15s -> 1m -> 5m -> 15m -> 1h -> 4h -> 24h): the base level (15s) is
  computed from raw rows, every coarser level from its children in time order, both in batch and live,
  so a timeframe's numbers never depend on which other timeframes were requested. ``delay_median`` is the
  one feature that cannot aggregate: it is recomputed from the raw delays at every level.
- Source absent vs empty: when a data type is not given at all (``None``; e.g. no liquidations for a spot
  pair), its features are NaN and its counts null; when it is given but has no rows in a bucket, sums and
  counts are 0 and prices NaN.
- ``oi_change`` uses a reference that carries the last observed open interest forward within the UTC day
  (it resets at 00:00 so days are independent); the feature itself is NaN when no open interest was
  observed in the bucket or none earlier in the day.
"""

from __future__ import annotations

import dataclasses
import itertools
from enum import StrEnum

import pyarrow as pa

from mdth_engine.core.schemas import TS
from mdth_engine.core.timeframes import TIMEFRAMES, US_PER_DAY, US_PER_SECOND

FEATURE_SPEC_VERSION = "1"

# Level chain: every timeframe is built from the previous one; each must divide the next and the day.
LEVELS: tuple[str, ...] = tuple(TIMEFRAMES)
BASE_TIMEFRAME = LEVELS[0]

# An option expiry must be at least this far after the bucket end to count as "nearest expiry".
OPTION_MIN_TIME_TO_EXPIRY_US = 3_600 * US_PER_SECOND
ATM_DELTA = 0.5
WING_DELTA = 0.25

BOOK_VALUES: tuple[str, ...] = ("mid_price", "spread_bps", "depth_imbalance", "microprice")
DERIVATIVE_VALUES: tuple[str, ...] = (
    "funding_rate",
    "predicted_funding_rate",
    "index_price",
    "mark_price",
    "open_interest",
)


class Aggregation(StrEnum):
    """How a coarser bucket's value follows from its finer children (in time order)."""

    FIRST = "first"  # first child with a value
    LAST = "last"  # last child's value, NaN included (state at bucket close: same end time)
    MAX = "max"
    MIN = "min"
    SUM = "sum"  # sum of children, added in time order; counts are exact
    LAST_NON_NAN = "last_non_nan"
    VOLUME_WEIGHTED = "volume_weighted"  # sum(child * child volume) / sum(child volume)
    TRADE_COUNT_WEIGHTED = "trade_count_weighted"  # sum(child * child trade_count) / sum(trade_count)
    TIME_WEIGHTED = "time_weighted"  # weighted by the time each child had a defined value
    DERIVED = "derived"  # recomputed from this bucket's own (aggregated) features, same formula
    RECOMPUTE_FROM_RAW = "recompute_from_raw"  # not aggregable: computed from raw rows at every level


@dataclasses.dataclass(frozen=True, slots=True)
class Feature:
    """One candle column: what it is made of, its formula, how it aggregates and when it is NaN."""

    name: str
    dtype: pa.DataType
    inputs: tuple[str, ...]  # lake data types it reads
    formula: str
    aggregation: Aggregation
    nan_policy: str
    unit: str


_F64 = pa.float64()
_I64 = pa.int64()
_T = ("trades",)
_L = ("liquidations",)
_D = ("derivative_ticker",)
_B = ("book_snapshot_5",)
_O = ("options_chain",)
_NO_TRADES = "NaN when the bucket has no trades (or trades are not given)"
_NO_TRADES_ZERO = "0 when the bucket has no trades; NaN when trades are not given"
_NO_LIQ_ZERO = "0 when the bucket has no liquidations; NaN when liquidations are not given"
_LAST_DT = "NaN when no non-NaN value was observed in the bucket"
_BOOK_CLOSE = "NaN before the first snapshot, or when the snapshot in force leaves it undefined"
_BOOK_TW = "NaN when the value was defined for no time in the bucket (only defined time is weighted)"
_OPT = "NaN when no chain is given, no expiry qualifies, or the chosen options lack delta/mark_iv"


def _f(name, dtype, inputs, formula, aggregation, nan_policy, unit) -> Feature:
    return Feature(name, dtype, inputs, formula, Aggregation(aggregation), nan_policy, unit)


FEATURES: tuple[Feature, ...] = (
    _f("open", _F64, _T, "price of the first trade (smallest timestamp)", "first", _NO_TRADES, "price"),
    _f("high", _F64, _T, "max trade price", "max", _NO_TRADES, "price"),
    _f("low", _F64, _T, "min trade price", "min", _NO_TRADES, "price"),
    _f("close", _F64, _T, "price of the last trade (largest timestamp)", "last_non_nan", _NO_TRADES, "price"),
    _f("volume", _F64, _T, "sum(amount)", "sum", _NO_TRADES_ZERO, "base amount"),
    _f("trade_count", _I64, _T, "count(trades)", "sum", "0 when empty; null when trades are not given", "1"),
    _f(
        "buy_volume_sum",
        _F64,
        _T,
        "sum(amount) where taker side = buy",
        "sum",
        _NO_TRADES_ZERO,
        "base amount",
    ),
    _f(
        "sell_volume_sum",
        _F64,
        _T,
        "sum(amount) where taker side = sell",
        "sum",
        _NO_TRADES_ZERO,
        "base amount",
    ),
    _f("size_avg", _F64, _T, "volume / trade_count", "trade_count_weighted", _NO_TRADES, "base amount"),
    _f(
        "price_vwap",
        _F64,
        _T,
        "sum(price * amount) / volume",
        "volume_weighted",
        _NO_TRADES + "; NaN when volume is 0",
        "price",
    ),
    _f(
        "delay_median",
        _F64,
        _T,
        "median(local_timestamp - timestamp) / 1000 (mean of the two middle values when the count is even)",
        "recompute_from_raw",
        _NO_TRADES,
        "ms",
    ),
    _f(
        "delay_mean",
        _F64,
        _T,
        "sum(local_timestamp - timestamp) / trade_count / 1000",
        "trade_count_weighted",
        _NO_TRADES,
        "ms",
    ),
    _f("delay_min", _F64, _T, "min(local_timestamp - timestamp) / 1000", "min", _NO_TRADES, "ms"),
    _f("delay_max", _F64, _T, "max(local_timestamp - timestamp) / 1000", "max", _NO_TRADES, "ms"),
    _f(
        "liquidation_buy_volume",
        _F64,
        _L,
        "sum(amount) where side = buy (a short was liquidated)",
        "sum",
        _NO_LIQ_ZERO,
        "base amount",
    ),
    _f(
        "liquidation_sell_volume",
        _F64,
        _L,
        "sum(amount) where side = sell (a long was liquidated)",
        "sum",
        _NO_LIQ_ZERO,
        "base amount",
    ),
    _f(
        "liquidation_count",
        _I64,
        _L,
        "count(liquidations), any side",
        "sum",
        "0 when empty; null when liquidations are not given",
        "1",
    ),
    _f("funding_rate", _F64, _D, "last non-NaN funding_rate", "last_non_nan", _LAST_DT, "rate"),
    _f(
        "predicted_funding_rate",
        _F64,
        _D,
        "last non-NaN predicted_funding_rate",
        "last_non_nan",
        _LAST_DT,
        "rate",
    ),
    _f("index_price", _F64, _D, "last non-NaN index_price", "last_non_nan", _LAST_DT, "price"),
    _f("mark_price", _F64, _D, "last non-NaN mark_price", "last_non_nan", _LAST_DT, "price"),
    _f("open_interest", _F64, _D, "last non-NaN open_interest", "last_non_nan", _LAST_DT, "contracts"),
    _f(
        "oi_change",
        _F64,
        _D,
        "open_interest - last open_interest observed earlier in the same UTC day",
        "derived",
        "NaN when open_interest is NaN or nothing was observed earlier in the day",
        "contracts",
    ),
    _f(
        "liquidation_with_rising_oi",
        _F64,
        (*_L, *_D),
        "liquidation_buy_volume + liquidation_sell_volume if oi_change > 0 else 0",
        "derived",
        "NaN when oi_change is NaN or liquidations are not given",
        "base amount",
    ),
    _f(
        "liquidation_with_falling_oi",
        _F64,
        (*_L, *_D),
        "liquidation_buy_volume + liquidation_sell_volume if oi_change < 0 else 0",
        "derived",
        "NaN when oi_change is NaN or liquidations are not given",
        "base amount",
    ),
    _f(
        "mid_price", _F64, _B, "(bid_price_1 + ask_price_1) / 2 at bucket close", "last", _BOOK_CLOSE, "price"
    ),
    _f(
        "spread_bps",
        _F64,
        _B,
        "(ask_price_1 - bid_price_1) / mid * 10000 at bucket close",
        "last",
        _BOOK_CLOSE,
        "bps",
    ),
    _f(
        "depth_imbalance",
        _F64,
        _B,
        "(sum bid_amount_1..5 - sum ask_amount_1..5) / (sum of both) at bucket close; empty levels count 0",
        "last",
        _BOOK_CLOSE + "; NaN when both sides are empty",
        "ratio",
    ),
    _f(
        "microprice",
        _F64,
        _B,
        "(bid_price_1 * ask_amount_1 + ask_price_1 * bid_amount_1) / "
        "(bid_amount_1 + ask_amount_1) at bucket close",
        "last",
        _BOOK_CLOSE,
        "price",
    ),
    _f(
        "mid_price_twa",
        _F64,
        _B,
        "time-weighted mean of mid_price over the bucket",
        "time_weighted",
        _BOOK_TW,
        "price",
    ),
    _f("spread_bps_twa", _F64, _B, "time-weighted mean of spread_bps", "time_weighted", _BOOK_TW, "bps"),
    _f(
        "depth_imbalance_twa",
        _F64,
        _B,
        "time-weighted mean of depth_imbalance",
        "time_weighted",
        _BOOK_TW,
        "ratio",
    ),
    _f("microprice_twa", _F64, _B, "time-weighted mean of microprice", "time_weighted", _BOOK_TW, "price"),
    _f(
        "atm_mark_iv",
        _F64,
        _O,
        "mark_iv of the nearest-expiry option whose |delta| is closest to 0.5 (ties: "
        "lower strike, then call), from the last row per option at or before bucket end; nearest expiry = "
        "the first expiring at least OPTION_MIN_TIME_TO_EXPIRY_US after bucket end",
        "last",
        _OPT,
        "percent",
    ),
    _f(
        "skew_25d_put_call_ratio",
        _F64,
        _O,
        "mark_iv of the put with delta closest to -0.25 / mark_iv of the "
        "call with delta closest to 0.25, same expiry and rows as atm_mark_iv",
        "last",
        _OPT,
        "ratio",
    ),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
TIME_COLUMNS: tuple[str, ...] = ("timestamp", "timestamp_out")
CANDLE_COLUMNS: tuple[str, ...] = (*TIME_COLUMNS, *FEATURE_NAMES)
INT_FEATURES = frozenset(f.name for f in FEATURES if pa.types.is_integer(f.dtype))


def candle_schema() -> pa.Schema:
    """Arrow schema of every candle file: bucket start/end, then every feature in spec order."""
    fields = [pa.field("timestamp", TS, nullable=False), pa.field("timestamp_out", TS, nullable=False)]
    fields += [pa.field(f.name, f.dtype) for f in FEATURES]
    return pa.schema(fields)


def level_ratios() -> tuple[int, ...]:
    """How many children each level has in the previous one (first entry: the base level, 1)."""
    lengths = [TIMEFRAMES[name] for name in LEVELS]
    ratios = [1]
    for finer, coarser in itertools.pairwise(lengths):
        if coarser % finer:
            raise AssertionError(f"timeframe {coarser} us is not a multiple of {finer} us")
        ratios.append(coarser // finer)
    if US_PER_DAY % lengths[-1]:
        raise AssertionError("the longest timeframe does not divide a day")
    return tuple(ratios)


def features_markdown() -> str:
    """The README's feature list, generated from this spec so the two cannot drift apart."""
    lines = ["| feature | unit | how it aggregates | formula |", "|---|---|---|---|"]
    for f in FEATURES:
        formula = f.formula.replace("|", "\\|")
        lines.append(f"| `{f.name}` | {f.unit} | {f.aggregation} | {formula} |")
    return "\n".join(lines)
