"""Sources by name, so the command line and ``LiveFeatureStream`` say ``binance:BTCUSDT`` and get a source.

=====================================================  ===================================================
``binance:BTCUSDT,ETHUSDT``                            Binance spot (symbols, or keys of either market)
``binance-futures:BTCUSDT``                            Binance USD-M futures
``replay:BINANCE:SPOT_PAIR:BTC-USDT@2024-01-01``       the lake's ticks of that day (``..2024-01-03``: a range)
``sim:BTCUSDT?speed=60&start=2024-03-12T10:00Z``       the built-in simulator's live feed (``&market=futures``)
``tardis-machine://127.0.0.1:8001/binance-futures/BTCUSDT``  a tardis-machine's normalized real-time stream
=====================================================  ===================================================

Symbols given separately (``symbols=``) join those in the name, so a bare ``binance``, ``binance-futures`` or
``sim`` is a name too when they are given. ``?book_ticker=1`` adds the best bid/ask stream of Binance (or of the
simulator). ``speed`` (1x, 10x, max) applies to replays and the simulator. A name that does not parse is a
``UsageError`` saying what was expected.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Any

from mdth_engine.core.errors import UsageError
from mdth_engine.live.sources.base import Source

SCHEMES = ("binance", "binance-futures", "replay", "sim", "tardis-machine")
BARE_SCHEMES = ("binance", "binance-futures", "sim")  # names whose symbols can all come from ``symbols=``
EXAMPLES = (
    "binance:BTCUSDT, binance-futures:BTCUSDT, replay:BINANCE:SPOT_PAIR:BTC-USDT@2024-01-01, "
    "sim:BTCUSDT, tardis-machine://127.0.0.1:8001/binance-futures/BTCUSDT"
)


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def open_source(
    spec: str | Source,
    symbols: list[str] | None = None,
    *,
    lake: str | None = None,
    speed: str | float | None = None,
    options: dict[str, Any] | None = None,
) -> Source:
    """The source a name describes (a ``Source`` is returned as is)."""
    if isinstance(spec, Source):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"name a source, e.g. {EXAMPLES}")
    text = spec.strip()
    options = dict(options or {})
    extra = list(symbols or [])
    if text.startswith("tardis-machine://"):
        return _tardis_machine(text, extra, options)
    head = text.split("?", 1)[0]
    if head.lower() in BARE_SCHEMES:  # ``binance`` or ``sim?book_ticker=1``: every symbol from ``symbols``
        text = f"{head}:{text[len(head) :]}"
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise UsageError(f"unknown source {spec!r}; use one of: {EXAMPLES}")
    rest, _, query_text = rest.partition("?")
    query = {k: v[-1] for k, v in urllib.parse.parse_qs(query_text).items()}
    if scheme in ("binance", "binance-futures"):
        from mdth_engine.live.sources.binance import BinanceSource, binance_key

        names = _split(rest) + extra
        keys = [binance_key(n, futures=scheme == "binance-futures") for n in names]
        return BinanceSource(keys, book_ticker=query.get("book_ticker") == "1", **options)
    if scheme == "sim":
        return _sim(rest, extra, query, speed, options)
    return _replay(rest, extra, query, lake, speed, options)


def _sim(rest: str, extra: list[str], query: dict[str, str], speed: Any, options: dict[str, Any]) -> Source:
    from mdth_engine.live.sources.binance import binance_key
    from mdth_engine.live.sources.replay import parse_speed
    from mdth_engine.live.sources.sim import SimSource

    market = query.get("market", "spot").lower()
    if market not in ("spot", "futures"):
        raise UsageError(f"sim market {market!r}: use spot or futures")
    names = _split(rest) + extra
    if not names:
        raise UsageError("name the simulator's symbols, e.g. sim:BTCUSDT or sim:BTCUSDT?market=futures")
    keys = [binance_key(n, futures=market == "futures") for n in names]
    rate = parse_speed(speed if speed is not None else query.get("speed", "1x"))
    if rate is None:
        raise UsageError("the simulator's live feed runs at a multiple of real time (1x, 10x, 60x), not max")
    start = None
    if query.get("start"):
        try:
            start = dt.datetime.fromisoformat(query["start"].replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"sim start {query['start']!r} is not an ISO date/time") from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=dt.UTC)
    return SimSource(
        keys,
        speed=rate,
        start=start,
        scale=query.get("scale"),
        book_ticker=query.get("book_ticker") == "1",
        **options,
    )


def _replay(
    rest: str, extra: list[str], query: dict[str, str], lake: str | None, speed: Any, options: dict[str, Any]
) -> Source:
    from mdth_engine.live.sources.replay import ReplaySource, parse_speed, replay_days
    from mdth_engine.storage.store import open_store

    keys_text, at, days_text = rest.rpartition("@")
    if not at or not days_text:
        raise UsageError(
            f"a replay names keys and a day: replay:BINANCE:SPOT_PAIR:BTC-USDT@2024-01-01 (got replay:{rest})"
        )
    keys = _split(keys_text) + extra
    if lake is None:
        from mdth_engine.core.settings import load_settings

        lake = load_settings().lake
    rate = parse_speed(speed if speed is not None else query.get("speed"))
    return ReplaySource(open_store(lake), keys, replay_days(days_text), speed=rate, **options)


def _tardis_machine(text: str, extra: list[str], options: dict[str, Any]) -> Source:
    from mdth_engine.live.sources.tardis_machine import DEFAULT_DATA_TYPES, TardisMachineSource

    parts = urllib.parse.urlsplit(text)
    path = [p for p in parts.path.split("/") if p]
    if not parts.hostname or not parts.port or len(path) < 1:
        raise UsageError(
            f"tardis-machine source {text!r}: use tardis-machine://HOST:PORT/EXCHANGE/SYMBOL[,SYMBOL] "
            "(PORT: its WebSocket port, 8001 by default)"
        )
    exchange = path[0]
    symbols = (_split(path[1]) if len(path) > 1 else []) + extra
    query = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
    types = tuple(_split(query["data_types"])) if query.get("data_types") else DEFAULT_DATA_TYPES
    scheme = "wss" if query.get("tls") == "1" else "ws"
    return TardisMachineSource(
        f"{scheme}://{parts.hostname}:{parts.port}", exchange, symbols, data_types=types, **options
    )
