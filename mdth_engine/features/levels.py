"""Per-bucket accumulators of one timeframe as numpy arrays: folding into the next level and finalising.

A ``Level`` holds the additive state behind every feature (sums, counts, extremes, last values, time
weights), not the features themselves, so coarser levels fold exactly; ``finalize`` turns it into the
candle columns of ``spec.FEATURES``. The incremental path mirrors these operations one bucket at a time.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mdth_engine.features.spec import BOOK_VALUES, DERIVATIVE_VALUES

I64_MAX = np.iinfo(np.int64).max
I64_MIN = np.iinfo(np.int64).min
N_DERIV = len(DERIVATIVE_VALUES)
N_BOOK = len(BOOK_VALUES)
OI_ROW = DERIVATIVE_VALUES.index("open_interest")


@dataclasses.dataclass(slots=True)
class Level:
    """Accumulators for ``len(n)`` consecutive buckets of one timeframe."""

    n: np.ndarray  # trade count
    vol: np.ndarray
    buy: np.ndarray
    sell: np.ndarray
    notional: np.ndarray  # sum(price * amount)
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    dsum: np.ndarray  # sum of delays, int µs
    dmin: np.ndarray  # I64_MAX when empty
    dmax: np.ndarray  # I64_MIN when empty
    lq_n: np.ndarray
    lq_buy: np.ndarray
    lq_sell: np.ndarray
    deriv: np.ndarray  # (N_DERIV, nb) last non-NaN values
    tw_num: np.ndarray  # (N_BOOK, nb) sum(value * µs)
    tw_den: np.ndarray  # (N_BOOK, nb) µs with a defined value
    book: np.ndarray  # (N_BOOK, nb) values at bucket close
    opt: np.ndarray  # (2, nb) atm_mark_iv, skew at bucket close

    @classmethod
    def empty(cls, nb: int) -> Level:
        def zeros() -> np.ndarray:
            return np.zeros(nb, dtype=np.float64)

        def nans(rows: int | None = None) -> np.ndarray:
            return np.full(nb if rows is None else (rows, nb), np.nan)

        return cls(
            n=np.zeros(nb, dtype=np.int64),
            vol=zeros(),
            buy=zeros(),
            sell=zeros(),
            notional=zeros(),
            open=nans(),
            high=nans(),
            low=nans(),
            close=nans(),
            dsum=np.zeros(nb, dtype=np.int64),
            dmin=np.full(nb, I64_MAX, dtype=np.int64),
            dmax=np.full(nb, I64_MIN, dtype=np.int64),
            lq_n=np.zeros(nb, dtype=np.int64),
            lq_buy=zeros(),
            lq_sell=zeros(),
            deriv=nans(N_DERIV),
            tw_num=np.zeros((N_BOOK, nb)),
            tw_den=np.zeros((N_BOOK, nb), dtype=np.int64),
            book=nans(N_BOOK),
            opt=nans(2),
        )

    def fold(self, ratio: int) -> Level:
        """The next coarser level: ``ratio`` consecutive buckets each, combined in time order."""
        return Level(
            n=_m(self.n, ratio).sum(axis=-1),
            vol=_seq_sum(_m(self.vol, ratio)),
            buy=_seq_sum(_m(self.buy, ratio)),
            sell=_seq_sum(_m(self.sell, ratio)),
            notional=_seq_sum(_m(self.notional, ratio)),
            open=_first_valid(_m(self.open, ratio)),
            high=np.fmax.reduce(_m(self.high, ratio), axis=-1),
            low=np.fmin.reduce(_m(self.low, ratio), axis=-1),
            close=_last_valid(_m(self.close, ratio)),
            dsum=_m(self.dsum, ratio).sum(axis=-1),
            dmin=_m(self.dmin, ratio).min(axis=-1),
            dmax=_m(self.dmax, ratio).max(axis=-1),
            lq_n=_m(self.lq_n, ratio).sum(axis=-1),
            lq_buy=_seq_sum(_m(self.lq_buy, ratio)),
            lq_sell=_seq_sum(_m(self.lq_sell, ratio)),
            deriv=_last_valid(_m(self.deriv, ratio)),
            tw_num=_seq_sum(_m(self.tw_num, ratio)),
            tw_den=_m(self.tw_den, ratio).sum(axis=-1),
            book=_m(self.book, ratio)[..., -1],
            opt=_m(self.opt, ratio)[..., -1],
        )


def _m(x: np.ndarray, ratio: int) -> np.ndarray:
    return x.reshape(*x.shape[:-1], x.shape[-1] // ratio, ratio)


def _seq_sum(x: np.ndarray) -> np.ndarray:
    """Sum over the last axis strictly left to right from 0.0 (what the live path does child by child)."""
    acc = np.zeros(x.shape[:-1])
    for j in range(x.shape[-1]):
        acc = acc + x[..., j]
    return acc


def _first_valid(x: np.ndarray) -> np.ndarray:
    j = np.argmax(~np.isnan(x), axis=-1)
    return np.take_along_axis(x, j[..., None], axis=-1)[..., 0]


def _last_valid(x: np.ndarray) -> np.ndarray:
    j = x.shape[-1] - 1 - np.argmax(~np.isnan(x[..., ::-1]), axis=-1)
    return np.take_along_axis(x, j[..., None], axis=-1)[..., 0]


def forward_fill(x: np.ndarray) -> np.ndarray:
    idx = np.where(np.isnan(x), 0, np.arange(len(x)))
    np.maximum.accumulate(idx, out=idx)
    return x[idx] if len(x) else x


def finalize(
    level: Level, delay_median: np.ndarray, *, has_trades: bool, has_liquidations: bool
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Feature columns (values, null mask or None) of one day of one timeframe, in spec terms."""
    nb = len(level.n)
    nan = np.full(nb, np.nan)
    n = level.n
    has = n > 0
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    with np.errstate(all="ignore"):
        out["open"] = (level.open, None)
        out["high"] = (level.high, None)
        out["low"] = (level.low, None)
        out["close"] = (level.close, None)
        out["volume"] = (level.vol if has_trades else nan, None)
        out["trade_count"] = (n, None if has_trades else np.ones(nb, dtype=bool))
        out["buy_volume_sum"] = (level.buy if has_trades else nan, None)
        out["sell_volume_sum"] = (level.sell if has_trades else nan, None)
        out["size_avg"] = (np.where(has, level.vol / n, np.nan), None)
        out["price_vwap"] = (np.where(level.vol > 0.0, level.notional / level.vol, np.nan), None)
        out["delay_median"] = (delay_median, None)
        out["delay_mean"] = (np.where(has, level.dsum.astype(np.float64) / n / 1000.0, np.nan), None)
        out["delay_min"] = (np.where(has, level.dmin / 1000.0, np.nan), None)
        out["delay_max"] = (np.where(has, level.dmax / 1000.0, np.nan), None)
        out["liquidation_buy_volume"] = (level.lq_buy if has_liquidations else nan, None)
        out["liquidation_sell_volume"] = (level.lq_sell if has_liquidations else nan, None)
        out["liquidation_count"] = (level.lq_n, None if has_liquidations else np.ones(nb, dtype=bool))
        for row, name in enumerate(DERIVATIVE_VALUES):
            out[name] = (level.deriv[row], None)
        oi = level.deriv[OI_ROW]
        reference = np.concatenate(([np.nan], forward_fill(oi)[:-1])) if nb else oi
        oi_change = oi - reference
        out["oi_change"] = (oi_change, None)
        liq = level.lq_buy + level.lq_sell
        unknown = np.isnan(oi_change) | (not has_liquidations)
        out["liquidation_with_rising_oi"] = (
            np.where(unknown, np.nan, np.where(oi_change > 0.0, liq, 0.0)),
            None,
        )
        out["liquidation_with_falling_oi"] = (
            np.where(unknown, np.nan, np.where(oi_change < 0.0, liq, 0.0)),
            None,
        )
        for row, name in enumerate(BOOK_VALUES):
            out[name] = (level.book[row], None)
        for row, name in enumerate(BOOK_VALUES):
            den = level.tw_den[row]
            out[f"{name}_twa"] = (np.where(den > 0, level.tw_num[row] / den, np.nan), None)
        out["atm_mark_iv"] = (level.opt[0], None)
        out["skew_25d_put_call_ratio"] = (level.opt[1], None)
    return out
