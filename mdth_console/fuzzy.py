"""Fuzzy instrument search: every word must hit the key or the exchange symbol, as a substring (best) or as
letters in order ("btcp" finds BTC-PERPETUAL); tighter, earlier and shorter hits rank first."""

from __future__ import annotations

from typing import Any


def _subsequence(needle: str, hay: str) -> int | None:
    """Span length of the earliest in-order match of ``needle`` in ``hay`` (None when absent)."""
    pos, first = 0, -1
    for ch in needle:
        pos = hay.find(ch, pos)
        if pos < 0:
            return None
        if first < 0:
            first = pos
        pos += 1
    return pos - first


def score(query: str, key: str, symbol: str = "") -> float | None:
    """Higher is better; None when some word of ``query`` does not match."""
    hay = f"{key} {symbol}".lower()
    total = 0.0
    for word in query.lower().split():
        at = hay.find(word)
        if at >= 0:
            total += 100.0 - min(at, 50) * 0.5
            if at == 0 or not hay[at - 1].isalnum():
                total += 20.0  # starts a part: "btc" in "BINANCE:SPOT_PAIR:BTC-USDT"
            continue
        span = _subsequence(word, hay)
        if span is None:
            return None
        total += 40.0 * len(word) / span
    return total - len(key) * 0.1


HELD_BONUS = 30.0  # an instrument the lake holds ticks of ranks above its namesakes


def search(
    query: str, rows: list[dict[str, Any]], limit: int = 200, held: set[str] | frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """Best ``limit`` matches of ``rows`` (dicts with instrument_key and tardis_symbol), instruments in
    ``held`` first among equals; for an empty query, the held ones then the rest, in key order."""
    if not query.strip():
        return sorted(rows, key=lambda r: (r["instrument_key"] not in held, r["instrument_key"]))[:limit]
    scored = []
    for row in rows:
        s = score(query, row["instrument_key"], row.get("tardis_symbol") or "")
        if s is not None:
            s += HELD_BONUS if row["instrument_key"] in held else 0.0
            scored.append((-s, row["instrument_key"], row))
    scored.sort(key=lambda t: (t[0], t[1]))
    return [row for _, _, row in scored[:limit]]
