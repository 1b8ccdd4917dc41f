"""Per-row formulas shared by the batch and the incremental path, written so both give identical bits.

Each vectorised formula has a scalar twin performing the same IEEE operations in the same order; the
option selection is a single numpy function both paths call on the same per-option state arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mdth_engine.features.spec import ATM_DELTA, OPTION_MIN_TIME_TO_EXPIRY_US, WING_DELTA

NAN = math.nan
BOOK_DEPTH = 5
EXPIRY_MISSING = np.iinfo(np.int64).min  # an option row without expiration never qualifies


def book_values_np(
    bid_prices: Sequence[np.ndarray],
    bid_amounts: Sequence[np.ndarray],
    ask_prices: Sequence[np.ndarray],
    ask_amounts: Sequence[np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mid, spread_bps, depth_imbalance, microprice for every snapshot (levels best first, NaN = empty).

    Written with in-place operations (one pass each) over a few buffers; the order of operations is
    exactly that of ``book_values``.
    """
    b1, a1 = bid_prices[0], ask_prices[0]
    ba1, aa1 = bid_amounts[0], ask_amounts[0]
    n = len(b1)
    with np.errstate(all="ignore"):
        mid = np.add(b1, a1)
        mid *= 0.5
        spread = np.full(n, NAN)
        np.divide(np.subtract(a1, b1), mid, out=spread, where=mid > 0.0)
        spread *= 10000.0
        scratch = np.empty(n)
        bid_depth = np.fmax(bid_amounts[0], 0.0)
        ask_depth = np.fmax(ask_amounts[0], 0.0)
        for level in range(1, len(bid_amounts)):
            bid_depth += _positive(bid_amounts[level], scratch)
            ask_depth += _positive(ask_amounts[level], scratch)
        total = np.add(bid_depth, ask_depth)
        np.subtract(bid_depth, ask_depth, out=bid_depth)
        imbalance = np.full(n, NAN)
        np.divide(bid_depth, total, out=imbalance, where=total > 0.0)
        top = np.add(ba1, aa1, out=total)
        num = np.multiply(b1, aa1, out=bid_depth)
        num += np.multiply(a1, ba1, out=ask_depth)
        micro = np.full(n, NAN)
        np.divide(num, top, out=micro, where=top > 0.0)
    return mid, spread, imbalance, micro


def _positive(x: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """``x`` with NaN and negatives as 0 (empty level); a fast min check skips the copy for clean columns."""
    if len(x) == 0 or x.min() >= 0.0:  # NaN makes the min NaN and the test False
        return x
    return np.fmax(x, 0.0, out=scratch)


def _pos(x: float) -> float:
    return x if x > 0.0 else 0.0


def book_values(
    bid_prices: Sequence[float],
    bid_amounts: Sequence[float],
    ask_prices: Sequence[float],
    ask_amounts: Sequence[float],
) -> tuple[float, float, float, float]:
    """Scalar twin of ``book_values_np`` for one snapshot (same operations, same order)."""
    b1, a1 = bid_prices[0], ask_prices[0]
    ba1, aa1 = bid_amounts[0], ask_amounts[0]
    mid = (b1 + a1) * 0.5
    spread = (a1 - b1) / mid * 10000.0 if mid > 0.0 else NAN
    bid_depth = _pos(bid_amounts[0])
    ask_depth = _pos(ask_amounts[0])
    for level in range(1, len(bid_amounts)):
        bid_depth = bid_depth + _pos(bid_amounts[level])
        ask_depth = ask_depth + _pos(ask_amounts[level])
    total = bid_depth + ask_depth
    imbalance = (bid_depth - ask_depth) / total if total > 0.0 else NAN
    top = ba1 + aa1
    micro = (b1 * aa1 + a1 * ba1) / top if top > 0.0 else NAN
    return mid, spread, imbalance, micro


def middle_pair(values: np.ndarray) -> tuple[int, int]:
    """The two middle values (equal when the count is odd) of a non-empty int array, by one selection."""
    n = len(values)
    k = (n - 1) // 2
    if n <= 2:
        ordered = np.sort(values)
        return int(ordered[k]), int(ordered[n // 2])
    part = np.partition(values, k)  # one kth: numpy's SIMD selection; two kths fall back to a slow path
    return int(part[k]), int(part[k] if n % 2 else part[k + 1 :].min())


def median_ms_from_pair(low: int, high: int) -> float:
    """Median in ms from the two middle delays in µs (equal when the count is odd); batch does the same."""
    return float(low + high) / 2.0 / 1000.0


def option_values(
    end_us: int,
    expiration: np.ndarray,
    is_call: np.ndarray,
    strike: np.ndarray,
    delta: np.ndarray,
    mark_iv: np.ndarray,
    min_time_to_expiry_us: int = OPTION_MIN_TIME_TO_EXPIRY_US,
) -> tuple[float, float, int]:
    """(atm_mark_iv, skew_25d_put_call_ratio, chosen expiry) from the last row of every option at ``end_us``.

    Arrays hold one slot per option symbol; a slot that never saw a row has ``EXPIRY_MISSING``.
    """
    eligible = (expiration >= end_us + min_time_to_expiry_us) & np.isfinite(delta) & np.isfinite(mark_iv)
    if not eligible.any():
        return NAN, NAN, EXPIRY_MISSING
    nearest = int(expiration[eligible].min())
    idx = np.flatnonzero(eligible & (expiration == nearest))
    d, iv, k, c = delta[idx], mark_iv[idx], strike[idx], is_call[idx]
    # Ties on distance: lower strike first, then the call (lexsort: last key is primary).
    put_first = ~c
    atm = _pick(np.abs(np.abs(d) - ATM_DELTA), k, put_first, np.ones(len(idx), dtype=bool))
    put = _pick(np.abs(d + WING_DELTA), k, put_first, ~c)
    call = _pick(np.abs(d - WING_DELTA), k, put_first, c)
    atm_iv = float(iv[atm]) if atm >= 0 else NAN
    skew = NAN
    if put >= 0 and call >= 0 and iv[call] > 0.0:
        skew = float(iv[put] / iv[call])
    return atm_iv, skew, nearest


def _pick(distance: np.ndarray, strike: np.ndarray, put_first: np.ndarray, mask: np.ndarray) -> int:
    """Index (into the masked-in rows) with the smallest distance, or -1 when none is allowed."""
    if not mask.any():
        return -1
    rows = np.flatnonzero(mask)
    order = np.lexsort((put_first[rows], strike[rows], distance[rows]))
    return int(rows[order[0]])
