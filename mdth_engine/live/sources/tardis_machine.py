"""tardis-machine's normalized real-time stream (``/ws-stream-normalized``) as normalized events.

The connection asks for ``options={"exchange", "symbols", "dataTypes", "withDisconnectMessages": true}``
(tardis-machine's ``StreamNormalizedRequestOptions``) and reads one JSON message per frame, in tardis-node's
normalized shapes: ``trade``, ``book_snapshot`` (``book_snapshot_5_100ms``: the depth the candle features
use), ``derivative_ticker``, ``liquidation`` and ``disconnect`` (tardis-machine lost the exchange). After a
``disconnect`` the next message of that exchange means it is back (``Connected``). Times are ISO strings;
``localTimestamp`` is tardis-machine's arrival time and becomes the event's ``local_timestamp``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import urllib.parse
from typing import Any

from mdth_engine.core.errors import UsageError
from mdth_engine.core.keys import exchange_for_venue, key_from_tardis, parse_key
from mdth_engine.live.clock import Clock
from mdth_engine.live.events import BookSnapshot, Connected, DerivativeTicker, Disconnect, Liquidation, Trade
from mdth_engine.live.sources.base import LIVE_GRACE_US
from mdth_engine.live.sources.ws import WebSocketSource

NAN = math.nan
DEPTH = 5
DEFAULT_DATA_TYPES = ("trade", f"book_snapshot_{DEPTH}_100ms", "derivative_ticker", "liquidation")
_LAKE_TYPE = {"trade": "trades", "derivative_ticker": "derivative_ticker", "liquidation": "liquidations"}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def iso_us(text: str) -> int:
    """An ISO 8601 UTC time (``2019-10-23T10:32:49.669Z``, any fraction) as epoch microseconds."""
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class TardisMachineSource(WebSocketSource):
    """Normalized messages of one exchange's ``symbols`` from a tardis-machine at ``base_url`` (ws://host:port)."""

    name = "tardis-machine"

    def __init__(
        self,
        base_url: str,
        exchange: str,
        symbols: list[str],
        *,
        data_types: tuple[str, ...] = DEFAULT_DATA_TYPES,
        clock: Clock | None = None,
        grace_us: int = LIVE_GRACE_US,
        **options: Any,
    ) -> None:
        if not symbols:
            raise UsageError(
                "name the symbols to stream, e.g. tardis-machine://127.0.0.1:8001/binance-futures/BTCUSDT"
            )
        self.exchange = exchange.strip().lower()
        self._keys_by_symbol: dict[str, str] = {}
        for symbol in symbols:
            key, native = self._resolve(symbol)
            self._keys_by_symbol[native] = key
        super().__init__(list(self._keys_by_symbol.values()), clock, grace_us=grace_us, **options)
        self.base_url = base_url.rstrip("/")
        self.requested = tuple(data_types)
        book = [t for t in self.requested if t.startswith("book_snapshot_")]
        if any(int(t.split("_")[2]) < DEPTH for t in book):
            raise UsageError(f"book snapshots need a depth of at least {DEPTH} for the book features")
        self._down = False
        self._parsed = {k: parse_key(k) for k in self.keys}

    def _resolve(self, symbol: str) -> tuple[str, str]:
        """(canonical key, exchange symbol as tardis writes it) for a key or an exchange symbol."""
        if ":" in symbol:
            parsed = parse_key(symbol)
            if exchange_for_venue(parsed.venue) != self.exchange:
                raise UsageError(f"{parsed} is not on {self.exchange}")
            native = parsed.base + parsed.quote if parsed.type in ("SPOT_PAIR", "PERPETUAL") else None
            if native is None:
                raise UsageError(f"{parsed}: give the exchange's own symbol for this instrument type")
            return str(parsed), native.upper()
        found = key_from_tardis(self.exchange, symbol)
        if found is None:
            raise UsageError(f"{symbol!r} is not a {self.exchange} instrument symbol")
        return str(found.key), found.tardis_symbol

    @property
    def spec(self) -> str:
        return f"tardis-machine://{self.base_url.split('://', 1)[-1]}/{self.exchange}/{','.join(self._keys_by_symbol)}"

    def data_types(self, key: str) -> frozenset[str]:
        parsed = self._parsed.get(key)
        if parsed is None:
            return frozenset()
        kinds = {_LAKE_TYPE[t] for t in self.requested if t in _LAKE_TYPE}
        if any(t.startswith("book_snapshot_") for t in self.requested):
            kinds.add("book_snapshot_5")
        if parsed.type == "SPOT_PAIR":
            kinds -= {"derivative_ticker", "liquidations"}
        return frozenset(kinds)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "source": self.spec}

    def options(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "symbols": list(self._keys_by_symbol),
            "dataTypes": list(self.requested),
            "withDisconnectMessages": True,
        }

    def connections(self) -> list[tuple[str, tuple[str, ...], Any]]:
        query = urllib.parse.urlencode({"options": json.dumps(self.options(), separators=(",", ":"))})
        return [(f"{self.base_url}/ws-stream-normalized?{query}", self.keys, None)]

    # -- messages -------------------------------------------------------------------------------------------

    def parse(self, text: str, local_us: int, context: Any) -> list[Any]:
        msg = json.loads(text)
        kind = msg.get("type")
        if kind == "disconnect":
            if self._down:
                return []
            self._down = True
            symbols = msg.get("symbols") or list(self._keys_by_symbol)
            keys = tuple(self._keys_by_symbol[s] for s in symbols if s in self._keys_by_symbol) or self.keys
            at = iso_us(msg["localTimestamp"]) if msg.get("localTimestamp") else local_us
            return [Disconnect(keys, at, f"tardis-machine lost {msg.get('exchange', self.exchange)}")]
        key = self._keys_by_symbol.get(str(msg.get("symbol", "")).upper())
        if key is None or msg.get("exchange", self.exchange) != self.exchange:
            return []
        out: list[Any] = []
        if self._down:
            self._down = False
            out.append(Connected(self.keys, local_us, self.redact(self.base_url)))
        ts = iso_us(msg["timestamp"])
        local = iso_us(msg["localTimestamp"]) if msg.get("localTimestamp") else local_us
        if kind == "trade":
            out.append(
                Trade(
                    key,
                    ts,
                    local,
                    float(msg["price"]),
                    float(msg["amount"]),
                    msg.get("side") or "unknown",
                    str(msg.get("id") or ""),
                )
            )
        elif kind == "book_snapshot":
            bp, ba = _levels(msg.get("bids"))
            ap, aa = _levels(msg.get("asks"))
            out.append(BookSnapshot(key, ts, local, bp, ba, ap, aa))
        elif kind == "derivative_ticker":
            funding = msg.get("fundingTimestamp")
            out.append(
                DerivativeTicker(
                    key,
                    ts,
                    local,
                    funding_rate=_float(msg.get("fundingRate")),
                    predicted_funding_rate=_float(msg.get("predictedFundingRate")),
                    index_price=_float(msg.get("indexPrice")),
                    mark_price=_float(msg.get("markPrice")),
                    open_interest=_float(msg.get("openInterest")),
                    last_price=_float(msg.get("lastPrice")),
                    funding_timestamp=iso_us(funding) if funding else None,
                )
            )
        elif kind == "liquidation":
            out.append(
                Liquidation(
                    key,
                    ts,
                    local,
                    float(msg["price"]),
                    float(msg["amount"]),
                    msg.get("side") or "unknown",
                    str(msg.get("id") or ""),
                )
            )
        return out


def _float(value: Any) -> float:
    return NAN if value is None else float(value)


def _levels(levels: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    levels = list(levels or [])[:DEPTH]
    prices = tuple(float(level["price"]) for level in levels)
    amounts = tuple(float(level["amount"]) for level in levels)
    pad = (NAN,) * (DEPTH - len(prices))
    return prices + pad, amounts + pad


__all__ = ["DEFAULT_DATA_TYPES", "TardisMachineSource", "iso_us"]
