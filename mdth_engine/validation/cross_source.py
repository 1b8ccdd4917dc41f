"""Cross-source: an instrument's 1m candles against the exchange's own 1m klines (Binance public REST).

Applies to BINANCE spot pairs (``/api/v3/klines``) and linear BINANCE-FUTURES perpetuals and futures
(``/fapi/v1/klines``). Endpoints: ``options["binance_rest_url"]`` / ``MDTH_BINANCE_REST_URL`` (default
https://api.binance.com) and ``options["binance_futures_rest_url"]`` / ``MDTH_BINANCE_FUTURES_REST_URL``
(default https://fapi.binance.com, or the spot URL when only that one is configured, as for the simulator).

Tolerances per minute: trade count exact; volume within a relative 1e-6 or 1e-8 absolute (klines print 8
decimals); open/high/low/close within a relative 1e-7 (only when both sides traded); an open or close that
differs counts as equal when it is the price of another trade at the same first/last exchange timestamp
(trades stamped at the same instant have no order by time: ours follow arrival, the exchange's trade id). A minute that differs
inside a source incident window (widened by a minute each side), or at the day's edge when the
neighbour day's ticks are not in the lake, is explained: a warning. Any other difference is an error. An
unreachable or refusing source is a warning, never an error.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from mdth_engine.core.timeframes import US_PER_DAY
from mdth_engine.validation import report as rp
from mdth_engine.validation.content import fmt_clock
from mdth_engine.validation.incidents import SourceFacts

PRICE_RTOL = 1e-7
VOLUME_RTOL = 1e-6
VOLUME_ATOL = 1e-8
FETCH_TIMEOUT_S = 10.0
MINUTE_US = 60_000_000
_PATHS = {"spot": "/api/v3/klines", "futures": "/fapi/v1/klines"}


class KlinesUnavailable(Exception):
    """The reference could not be had; the message says why, in one line."""


def endpoints(options: dict[str, Any]) -> dict[str, str]:
    """Base URLs of the spot and futures REST APIs: request options, then settings (``MDTH_BINANCE_REST_URL``,
    ``MDTH_BINANCE_FUTURES_REST_URL``, mdth.toml). A spot URL given alone serves both (one host, as the simulator)."""
    from mdth_engine.core.settings import load_settings

    settings = load_settings()
    given = settings.model_fields_set
    spot = options.get("binance_rest_url") or settings.binance_rest_url
    futures = options.get("binance_futures_rest_url")
    if not futures:
        spot_given = bool(options.get("binance_rest_url")) or "binance_rest_url" in given
        own = "binance_futures_rest_url" in given
        futures = settings.binance_futures_rest_url if own or not spot_given else spot
    return {"spot": spot.rstrip("/"), "futures": futures.rstrip("/")}


def market_of(row: dict[str, Any]) -> tuple[str, str] | None:
    """(``spot`` | ``futures``, Binance symbol) when the instrument has Binance klines to compare with."""
    venue, itype, symbol = row.get("venue"), row.get("instrument_type"), row.get("tardis_symbol")
    if not symbol:
        return None
    if venue == "BINANCE" and itype == "SPOT_PAIR":
        return "spot", str(symbol).upper()
    if venue == "BINANCE-FUTURES" and itype in ("PERPETUAL", "FUTURE") and not row.get("inverse"):
        return "futures", str(symbol).upper()
    return None


class KlineSource:
    """Fetches a day of 1m klines; a base URL that cannot be reached is not asked again in this run."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.urls = endpoints(options)
        self._down: dict[str, str] = {}

    async def day(self, kind: str, symbol: str, day_start_us: int) -> dict[str, np.ndarray]:
        base = self.urls[kind]
        if base in self._down:
            raise KlinesUnavailable(self._down[base])
        rows: list[list[Any]] = []
        start_ms, end_ms = day_start_us // 1000, (day_start_us + US_PER_DAY) // 1000
        while start_ms < end_ms:
            query = f"symbol={symbol}&interval=1m&startTime={start_ms}&endTime={end_ms - 1}&limit=1000"
            page = await asyncio.to_thread(self._get, base, f"{base}{_PATHS[kind]}?{query}")
            if not page:
                break
            rows += page
            start_ms = int(page[-1][0]) + 60_000
        return parse_klines(rows)

    def _get(self, base: str, url: str) -> list[list[Any]]:
        request = urllib.request.Request(url, headers={"User-Agent": "mdth-validate"})
        try:
            with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read() or b"{}").get("msg", "")
            except ValueError:
                message = ""
            raise KlinesUnavailable(f"{base} answered HTTP {exc.code} {message}".strip()) from None
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            self._down[base] = f"{base} unreachable ({reason})"
            raise KlinesUnavailable(self._down[base]) from None
        if not isinstance(body, list):
            raise KlinesUnavailable(f"{base} answered something that is not a list of klines")
        return body


def parse_klines(rows: list[list[Any]]) -> dict[str, np.ndarray]:
    """Binance kline rows as arrays: open time (us), OHLC, volume, trade count."""
    if not rows:
        empty = np.empty(0)
        return {
            "ts": np.empty(0, np.int64),
            **{k: empty for k in ("open", "high", "low", "close", "volume")},
            "count": np.empty(0, np.int64),
        }
    table = np.array([[float(r[i]) for i in (1, 2, 3, 4, 5)] for r in rows], dtype=np.float64)
    return {
        "ts": np.array([int(r[0]) * 1000 for r in rows], dtype=np.int64),
        "open": table[:, 0],
        "high": table[:, 1],
        "low": table[:, 2],
        "close": table[:, 3],
        "volume": table[:, 4],
        "count": np.array([int(r[8]) for r in rows], dtype=np.int64),
    }


def _col(table: pa.Table, name: str) -> np.ndarray:
    column = table[name]
    if pa.types.is_timestamp(column.type):
        return column.cast(pa.int64()).to_numpy()
    return column.cast(pa.float64()).fill_null(float("nan")).to_numpy()


def explained_minutes(
    minutes: np.ndarray, day_start_us: int, facts: SourceFacts | None, edges: tuple[bool, bool]
) -> np.ndarray:
    """Minutes whose difference has a known cause: a source incident (+- 1 min), or a day edge without ticks."""
    out = np.zeros(minutes.size, dtype=bool)
    for incident in facts.incidents if facts else ():
        out |= (minutes + MINUTE_US > incident.start_us - MINUTE_US) & (minutes < incident.end_us + MINUTE_US)
    first_open, last_open = edges
    if first_open:
        out |= minutes == day_start_us
    if last_open:
        out |= minutes == day_start_us + US_PER_DAY - MINUTE_US
    return out


TiePrices = Callable[[np.ndarray], dict[int, tuple[np.ndarray, np.ndarray]]]


def _resolve_ties(
    kt: np.ndarray,
    ref: dict[str, np.ndarray],
    diff_open: np.ndarray,
    diff_close: np.ndarray,
    candidates: np.ndarray,
    tie_prices: TiePrices,
) -> np.ndarray:
    """Minutes whose open/close differ only because several trades share the first/last instant."""
    index = np.nonzero(candidates)[0]
    prices = tie_prices(kt[index])
    resolved = np.zeros(kt.size, dtype=bool)
    for i in index:  # one iteration per differing minute, never per trade
        firsts, lasts = prices.get(int(kt[i]), (np.empty(0), np.empty(0)))
        open_ok = not diff_open[i] or bool(
            np.isclose(firsts, ref["open"][i], rtol=PRICE_RTOL, atol=0.0).any()
        )
        close_ok = not diff_close[i] or bool(
            np.isclose(lasts, ref["close"][i], rtol=PRICE_RTOL, atol=0.0).any()
        )
        resolved[i] = open_ok and close_ok
    return resolved


def compare(
    key: str,
    one_minute: pa.Table,
    klines: dict[str, np.ndarray],
    day_start_us: int,
    facts: SourceFacts | None,
    edges: tuple[bool, bool],
    where: str,
    tie_prices: TiePrices | None = None,
) -> rp.Check:
    """Minute by minute, within the stated tolerances; the first unexplained difference in words.

    ``tie_prices(minute starts)`` gives, per minute, the prices of the trades at its first and last exchange
    timestamp: an open or close that is one of them is equal (simultaneous trades have no order by time).
    """
    ts = _col(one_minute, "timestamp")
    kt = klines["ts"]
    rows = np.clip(np.searchsorted(ts, kt), 0, max(ts.size - 1, 0))
    rows = np.where((ts.size > 0) & (ts[rows] == kt) if ts.size else np.zeros(kt.size, bool), rows, -1)
    if not kt.size:
        return rp.Check(
            key, rp.CANDLES, "cross_source", rp.SKIP, rp.PRESENT, detail=f"{where} has no klines this day"
        )
    known = rows >= 0
    rows, kt = rows[known], kt[known]
    ref = {k: v[known] for k, v in klines.items()}
    ours = {name: _col(one_minute, name)[rows] for name in ("open", "high", "low", "close", "volume")}
    count = one_minute["trade_count"].cast(pa.int64()).fill_null(-1).to_numpy()[rows]
    diff_count = count != ref["count"]
    diff_volume = ~np.isclose(ours["volume"], ref["volume"], rtol=VOLUME_RTOL, atol=VOLUME_ATOL)
    traded = (count > 0) & (ref["count"] > 0)
    diff = {
        name: traded & ~np.isclose(ours[name], ref[name], rtol=PRICE_RTOL, atol=0.0)
        for name in ("open", "high", "low", "close")
    }
    differs = diff_count | diff_volume | diff["open"] | diff["high"] | diff["low"] | diff["close"]
    only_ends = differs & ~(diff_count | diff_volume | diff["high"] | diff["low"])
    ties = 0
    if only_ends.any() and tie_prices is not None:
        resolved = _resolve_ties(kt, ref, diff["open"], diff["close"], only_ends, tie_prices)
        ties = int(resolved.sum())
        differs &= ~resolved
    explained = explained_minutes(kt, day_start_us, facts, edges)
    unexplained = differs & ~explained
    n_diff, n_bad = int(differs.sum()), int(unexplained.sum())
    if not n_diff:
        tied = f" ({ties} with simultaneous trades at the open or close instant)" if ties else ""
        return rp.Check(
            key,
            rp.CANDLES,
            "cross_source",
            rp.OK,
            rp.PRESENT,
            value=0.0,
            detail=f"{kt.size} minutes equal to {where} klines{tied}",
        )
    i = int(np.nonzero(unexplained if n_bad else differs)[0][0])
    first = (
        f"first {fmt_clock(int(kt[i]))}: trades {int(count[i])} vs {int(ref['count'][i])}, "
        f"volume {ours['volume'][i]:.8g} vs {ref['volume'][i]:.8g}, close {ours['close'][i]:.10g} vs "
        f"{ref['close'][i]:.10g}"
    )
    detail = f"{n_diff} of {kt.size} minutes differ from {where} klines ({first})"
    if n_diff > n_bad:
        during = facts.during(day_start_us, day_start_us + US_PER_DAY) if facts else []
        cause = [inc.describe() for inc in during]
        detail += f"; {n_diff - n_bad} explained" + (
            f" by {cause[0]}" if cause else " (day edge without the neighbour day's ticks)"
        )
    return rp.Check(
        key,
        rp.CANDLES,
        "cross_source",
        rp.ERROR if n_bad else rp.WARN,
        rp.PRESENT,
        issues=n_diff,
        value=n_diff / kt.size,
        limit=0.0,
        detail=detail,
    )
