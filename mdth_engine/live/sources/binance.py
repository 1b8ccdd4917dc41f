"""Binance's public market streams, spot and USD-M futures, as normalized events.

One combined-stream connection per market (``/stream?streams=btcusdt@trade/btcusdt@depth5@100ms/...``):
spot instruments (venue BINANCE) get ``@trade`` and ``@depth5@100ms``; USD-M futures (BINANCE-FUTURES,
linear perpetuals and dated futures) also ``@markPrice@1s`` and ``@forceOrder``. ``@bookTicker`` is added
with ``book_ticker=True`` (journaled; book features use the depth-5 snapshots, as the batch candles do).

Mapping onto the lake's Tardis shapes: trade time ``T`` is the exchange timestamp and the taker side is
``sell`` when the buyer is the maker (``m``); futures depth uses ``T`` (spot depth carries no time: its arrival
is used); ``markPriceUpdate`` gives mark and index price, funding rate and next funding time; ``forceOrder``
gives a liquidation whose side is the liquidation order's side (``BUY``: a short was liquidated).

Endpoints: settings ``binance_ws_url`` / ``binance_futures_ws_url`` (``MDTH_BINANCE_WS_URL`` and
``MDTH_BINANCE_FUTURES_WS_URL``); tests point them at the
simulator (``SimulatorServer.ws_spot_url`` / ``.ws_url``).
"""

from __future__ import annotations

import json
import math
from typing import Any

from mdth_engine.core.errors import UsageError
from mdth_engine.core.keys import InstrumentKey, key_from_tardis, parse_key
from mdth_engine.live.clock import Clock
from mdth_engine.live.events import BookSnapshot, BookTicker, DerivativeTicker, Liquidation, Trade
from mdth_engine.live.sources.base import LIVE_GRACE_US, SourceError
from mdth_engine.live.sources.ws import WebSocketSource

NAN = math.nan
DEPTH = 5
_PAD = (NAN,) * DEPTH
SPOT_TYPES = frozenset({"trades", "book_snapshot_5"})
FUTURES_TYPES = frozenset({"trades", "book_snapshot_5", "derivative_ticker", "liquidations"})


def binance_key(text: str, futures: bool = False) -> str:
    """A canonical key from a key or a Binance symbol (``BTCUSDT`` spot, or USD-M futures when ``futures``)."""
    if ":" in text:
        key = parse_key(text)
    else:
        found = key_from_tardis("binance-futures" if futures else "binance", text.strip().upper())
        if found is None:
            raise UsageError(f"{text!r} is not a Binance {'futures' if futures else 'spot'} symbol")
        key = found.key
    if key.venue not in ("BINANCE", "BINANCE-FUTURES"):
        raise UsageError(f"{key} is not on Binance (venues BINANCE and BINANCE-FUTURES)")
    stream_symbol(key)  # validates the contract kind
    return str(key)


def stream_symbol(key: InstrumentKey) -> str:
    """The lower-case symbol Binance streams use for a key."""
    if key.venue == "BINANCE" and key.type == "SPOT_PAIR":
        return f"{key.base}{key.quote}".lower()
    if key.venue == "BINANCE-FUTURES" and key.quote in ("USDT", "USDC"):
        if key.type == "PERPETUAL":
            return f"{key.base}{key.quote}".lower()
        if key.type == "FUTURE" and key.expiry is not None:
            return f"{key.base}{key.quote}_{key.expiry:%y%m%d}".lower()
    raise UsageError(f"{key}: only Binance spot pairs and USD-M (USDT/USDC) futures are streamed")


class BinanceSource(WebSocketSource):
    """Trades, depth-5 books, mark prices and liquidations of Binance instruments."""

    name = "binance"

    def __init__(
        self,
        keys: list[str],
        *,
        clock: Clock | None = None,
        spot_url: str | None = None,
        futures_url: str | None = None,
        book_ticker: bool = False,
        grace_us: int = LIVE_GRACE_US,
        **options: Any,
    ) -> None:
        canonical = [binance_key(k) for k in keys]
        if not canonical:
            raise UsageError("name at least one Binance symbol, e.g. binance:BTCUSDT")
        super().__init__(canonical, clock, grace_us=grace_us, **options)
        if not (spot_url and futures_url):
            from mdth_engine.core.settings import load_settings

            settings = load_settings()  # MDTH_BINANCE_WS_URL / MDTH_BINANCE_FUTURES_WS_URL or mdth.toml
            spot_url, futures_url = (
                spot_url or settings.binance_ws_url,
                futures_url or settings.binance_futures_ws_url,
            )
        self.spot_url = spot_url.rstrip("/")
        self.futures_url = futures_url.rstrip("/")
        self.book_ticker = book_ticker
        self._parsed = {k: parse_key(k) for k in self.keys}
        self._by_symbol: dict[tuple[bool, str], str] = {
            (p.venue == "BINANCE-FUTURES", stream_symbol(p)): k for k, p in self._parsed.items()
        }

    @property
    def spec(self) -> str:
        return f"binance:{','.join(self.keys)}"

    def data_types(self, key: str) -> frozenset[str]:
        parsed = self._parsed.get(key)
        if parsed is None:
            return frozenset()
        return FUTURES_TYPES if parsed.venue == "BINANCE-FUTURES" else SPOT_TYPES

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "source": self.spec}

    def streams(self, futures: bool) -> list[str]:
        names = []
        for (fut, symbol), _ in self._by_symbol.items():
            if fut != futures:
                continue
            names += [f"{symbol}@trade", f"{symbol}@depth5@100ms"]
            if futures:
                names += [f"{symbol}@markPrice@1s", f"{symbol}@forceOrder"]
            if self.book_ticker:
                names.append(f"{symbol}@bookTicker")
        return names

    def connections(self) -> list[tuple[str, tuple[str, ...], Any]]:
        out = []
        for futures, base in ((False, self.spot_url), (True, self.futures_url)):
            names = self.streams(futures)
            if names:
                keys = tuple(k for (fut, _), k in self._by_symbol.items() if fut == futures)
                out.append((f"{base}/stream?streams={'/'.join(names)}", keys, futures))
        return out

    def redact(self, url: str) -> str:
        return url.split("/stream?", 1)[0]

    # -- messages -------------------------------------------------------------------------------------------

    def parse(self, text: str, local_us: int, context: Any) -> list[Any]:
        msg = json.loads(text)
        if "error" in msg and "stream" not in msg:
            error = msg["error"]
            detail = error.get("msg", error) if isinstance(error, dict) else error
            raise SourceError(f"Binance refused the subscription: {detail}")
        stream = msg.get("stream")
        data = msg.get("data")
        if not stream or not isinstance(data, dict):
            return []  # a reply to a request, or something we did not ask for
        symbol, _, kind = stream.partition("@")
        key = self._by_symbol.get((bool(context), symbol))
        if key is None:
            return []
        if kind == "trade":
            return [
                Trade(
                    key,
                    int(data["T"]) * 1000,
                    local_us,
                    float(data["p"]),
                    float(data["q"]),
                    "sell" if data["m"] else "buy",
                    str(data.get("t", "")),
                )
            ]
        if kind.startswith("depth"):
            bids, asks = data.get("bids", data.get("b")), data.get("asks", data.get("a"))
            stamp = data.get("T") or data.get("E")
            ts = int(stamp) * 1000 if stamp else local_us
            bp, ba = _levels(bids)
            ap, aa = _levels(asks)
            return [BookSnapshot(key, ts, local_us, bp, ba, ap, aa)]
        if kind.startswith("markPrice"):
            rate = data.get("r")
            funding = int(data.get("T") or 0)
            return [
                DerivativeTicker(
                    key,
                    int(data["E"]) * 1000,
                    local_us,
                    funding_rate=float(rate) if rate not in (None, "") else NAN,
                    index_price=_float(data.get("i")),
                    mark_price=_float(data.get("p")),
                    funding_timestamp=funding * 1000 if funding > 0 else None,
                )
            ]
        if kind == "forceOrder":
            order = data["o"]
            price = _float(order.get("ap"))
            amount = _float(order.get("z"))
            return [
                Liquidation(
                    key,
                    int(order.get("T") or data["E"]) * 1000,
                    local_us,
                    price if price > 0 else _float(order.get("p")),
                    amount if amount > 0 else _float(order.get("q")),
                    str(order.get("S", "")).lower() or "unknown",
                )
            ]
        if kind == "bookTicker":
            stamp = data.get("T") or data.get("E")
            return [
                BookTicker(
                    key,
                    int(stamp) * 1000 if stamp else local_us,
                    local_us,
                    _float(data.get("b")),
                    _float(data.get("B")),
                    _float(data.get("a")),
                    _float(data.get("A")),
                )
            ]
        return []


def _float(value: Any) -> float:
    if value is None or value == "":
        return NAN
    return float(value)


def _levels(levels: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Price and amount tuples of the best five levels, NaN-padded."""
    if not levels:
        return _PAD, _PAD
    prices = tuple(float(level[0]) for level in levels[:DEPTH])
    amounts = tuple(float(level[1]) for level in levels[:DEPTH])
    if len(prices) < DEPTH:
        pad = (NAN,) * (DEPTH - len(prices))
        prices, amounts = prices + pad, amounts + pad
    return prices, amounts
