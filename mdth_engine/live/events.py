"""Normalized live events every source yields, and the bars and notices the live engine emits.

Times are int microseconds since the epoch, UTC: ``timestamp`` is the exchange's time, ``local_timestamp`` the
arrival time on the clock of the stream (wall clock live, the lake's ``local_timestamp`` in a replay). Events
are small slotted classes (cheap to build: a replay makes hundreds of thousands a second); sources hand them
over in ``Batch``es stamped with the monotonic time they arrived, which the engine's latency figures start from.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, ClassVar

from mdth_engine.storage.parquet import format_timestamp

NAN = math.nan


@dataclasses.dataclass(slots=True)
class Trade:
    """One trade; ``side`` is the taker side (buy, sell or unknown), as in Tardis ``trades``."""

    data_type: ClassVar[str] = "trades"
    key: str
    timestamp: int
    local_timestamp: int
    price: float
    amount: float
    side: str
    id: str = ""


@dataclasses.dataclass(slots=True)
class Liquidation:
    """One liquidation; ``side`` buy = a short was liquidated, sell = a long (Tardis ``liquidations``)."""

    data_type: ClassVar[str] = "liquidations"
    key: str
    timestamp: int
    local_timestamp: int
    price: float
    amount: float
    side: str
    id: str = ""


@dataclasses.dataclass(slots=True)
class BookSnapshot:
    """Top levels of the book (best first, at most 5 kept, NaN for empty levels): ``book_snapshot_5``."""

    data_type: ClassVar[str] = "book_snapshot_5"
    key: str
    timestamp: int
    local_timestamp: int
    bid_prices: tuple[float, ...]
    bid_amounts: tuple[float, ...]
    ask_prices: tuple[float, ...]
    ask_amounts: tuple[float, ...]


@dataclasses.dataclass(slots=True)
class BookTicker:
    """Best bid and ask only (``book_ticker``); journaled, but book features need ``BookSnapshot`` depth."""

    data_type: ClassVar[str] = "book_ticker"
    key: str
    timestamp: int
    local_timestamp: int
    bid_price: float
    bid_amount: float
    ask_price: float
    ask_amount: float


@dataclasses.dataclass(slots=True)
class DerivativeTicker:
    """Funding, index, mark and open interest of a derivative; NaN = not sent in this message."""

    data_type: ClassVar[str] = "derivative_ticker"
    key: str
    timestamp: int
    local_timestamp: int
    funding_rate: float = NAN
    predicted_funding_rate: float = NAN
    index_price: float = NAN
    mark_price: float = NAN
    open_interest: float = NAN
    last_price: float = NAN
    funding_timestamp: int | None = None


@dataclasses.dataclass(slots=True)
class Disconnect:
    """The source lost its connection for these instruments at ``local_timestamp`` (it keeps reconnecting)."""

    data_type: ClassVar[str] = ""
    keys: tuple[str, ...]
    local_timestamp: int
    reason: str = ""


@dataclasses.dataclass(slots=True)
class Connected:
    """The source is (re)connected for these instruments; ends the gap a ``Disconnect`` opened."""

    data_type: ClassVar[str] = ""
    keys: tuple[str, ...]
    local_timestamp: int
    url: str = ""


MarketEvent = Trade | Liquidation | BookSnapshot | BookTicker | DerivativeTicker
Event = MarketEvent | Disconnect | Connected
MARKET_TYPES: tuple[type, ...] = (Trade, Liquidation, BookSnapshot, BookTicker, DerivativeTicker)
STATUS_TYPES: tuple[type, ...] = (Disconnect, Connected)


@dataclasses.dataclass(slots=True)
class Batch:
    """Events that arrived together, with ``time.perf_counter_ns()`` at their arrival."""

    events: list[Any]
    received_ns: int = dataclasses.field(default_factory=time.perf_counter_ns)


# -- what the engine emits ----------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None  # JSON has no NaN
    return value


@dataclasses.dataclass(slots=True)
class Bar:
    """One closed candle of one instrument and timeframe: every feature of the candle spec plus flags.

    ``values`` holds the candle row (``timestamp``/``timestamp_out`` as int µs, then the spec's features).
    ``spans_disconnect``: the source was down during the bar, it may miss events. ``partial``: the stream
    started inside the bar. ``warm``: read from the lake's candles at start, not built live.
    """

    kind: ClassVar[str] = "bar"
    instrument_key: str
    timeframe: str
    values: dict[str, Any]
    spans_disconnect: bool = False
    partial: bool = False
    warm: bool = False

    @property
    def timestamp(self) -> int:
        return self.values["timestamp"]

    @property
    def timestamp_out(self) -> int:
        return self.values["timestamp_out"]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ISO UTC times, NaN as null, every feature, then the flags."""
        out: dict[str, Any] = {
            "kind": "bar",
            "instrument_key": self.instrument_key,
            "timeframe": self.timeframe,
        }
        for name, value in self.values.items():
            if name in ("timestamp", "timestamp_out"):
                out[name] = format_timestamp(value)
            else:
                out[name] = _json_value(value)
        out["spans_disconnect"] = self.spans_disconnect
        out["partial"] = self.partial
        out["warm"] = self.warm
        return out


@dataclasses.dataclass(slots=True)
class Notice:
    """Something a watcher should see: a disconnect, a reconnect, warm start loaded, late events, the end."""

    kind: ClassVar[str] = "event"
    event: str
    at_us: int
    message: str = ""
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "event",
            "event": self.event,
            "at": format_timestamp(self.at_us),
            "message": self.message,
            **{k: _json_value(v) for k, v in self.data.items()},
        }


def now_us() -> int:
    """Wall-clock microseconds since the epoch."""
    return time.time_ns() // 1000
