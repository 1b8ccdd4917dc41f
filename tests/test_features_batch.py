"""Batch candles against an independent recomputation (polars + plain numpy written here), and the
aggregation-consistency rule: every aggregating feature of 5m..24h equals the aggregation of the 1m candles.

The oracle below never calls mdth's feature code; it takes the spec's semantics (bucketing by exchange
timestamp, first/last by timestamp then arrival, state rows never rewinding time, ...) from the spec text.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from test_features_synthetic import Day, make_day

from mdth_engine.core.timeframes import TIMEFRAMES, US_PER_DAY, day_start_us
from mdth_engine.features.batch import build_candles
from mdth_engine.features.spec import FEATURES, Aggregation

HOUR = 3_600_000_000
TF_NAMES = tuple(TIMEFRAMES)
DAYS = [
    # (date, seed, which sources are given)
    (dt.date(2024, 3, 1), 11, {"trades", "liquidations", "derivative_ticker", "book", "options_chain"}),
    (dt.date(2024, 3, 2), 12, {"trades", "derivative_ticker", "book"}),  # e.g. no liquidations feed
    # The book feed starts mid-bucket at 02:00:07.5 (no state before): those buckets have no book values.
    (dt.date(2024, 2, 29), 13, {"trades", "liquidations", "derivative_ticker", "book", "options_chain"}),
]
LATE_BOOK_START_US = 2 * 3_600_000_000 + 7_500_000


def _late_book(day: Day) -> None:
    ts = day.book.column("timestamp").cast(pa.int64()).to_numpy()
    day.book = day.book.filter(pa.array(ts >= day_start_us(day.day) + LATE_BOOK_START_US))


def _given(day: Day, sources: set[str]) -> dict[str, pa.Table | None]:
    return {name: (table if name in sources else None) for name, table in day.tables().items()}


@pytest.fixture(scope="module", params=range(len(DAYS)), ids=[str(d[0]) for d in DAYS])
def case(request):
    date, seed, sources = DAYS[request.param]
    day = make_day(date, seed)
    if request.param == 2:
        _late_book(day)
    given = _given(day, sources)
    out = build_candles(date, **given)
    oracle = {tf: Oracle(date, given, TIMEFRAMES[tf]) for tf in TF_NAMES}
    return date, given, out, oracle


# -- the independent computation ------------------------------------------------------------------------


def _us(df: pl.DataFrame, name: str) -> pl.Expr:
    return pl.col(name).dt.epoch("us")


class Oracle:
    """Every feature for one day and one timeframe, computed from the raw tables in a different way."""

    def __init__(self, date: dt.date, given: dict[str, pa.Table | None], tf_us: int) -> None:
        self.start = day_start_us(date)
        self.tf = tf_us
        self.nb = US_PER_DAY // tf_us
        self.cols: dict[str, np.ndarray] = {}
        self.weights: dict[str, np.ndarray] = {}  # time with a defined value, per book value
        self._trades(given["trades"])
        self.has_liquidations = given["liquidations"] is not None
        self._liquidations(given["liquidations"])
        self._derivative(given["derivative_ticker"])
        self._book(given["book"])
        self._options(given["options_chain"])

    def _frame(self, table: pa.Table, extra: list[pl.Expr]) -> pl.DataFrame:
        df = pl.from_arrow(table).with_row_index("row")
        df = df.with_columns(ts=_us(df, "timestamp"), lts=_us(df, "local_timestamp"))
        df = df.filter((pl.col("ts") >= self.start) & (pl.col("ts") < self.start + US_PER_DAY))
        bucket = ((pl.col("ts") - self.start) // self.tf).alias("bucket")
        return df.with_columns(bucket, *extra).sort(["ts", "row"])

    def _dense(self, df: pl.DataFrame) -> pl.DataFrame:
        grid = pl.DataFrame({"bucket": np.arange(self.nb, dtype=np.int64)})
        return grid.join(df, on="bucket", how="left").sort("bucket")

    def _trades(self, table: pa.Table | None) -> None:
        c = self.cols
        nan = np.full(self.nb, np.nan)
        if table is None:
            for name in (
                "open",
                "high",
                "low",
                "close",
                "volume",
                "buy_volume_sum",
                "sell_volume_sum",
                "size_avg",
                "price_vwap",
                "delay_median",
                "delay_mean",
                "delay_min",
                "delay_max",
            ):
                c[name] = nan
            c["trade_count"] = np.full(self.nb, None)
            return
        df = self._frame(table, []).filter(pl.col("price").is_not_null() & pl.col("amount").is_not_null())
        side = pl.col("side").cast(pl.String)
        agg = df.group_by("bucket").agg(
            pl.col("price").first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").last().alias("close"),
            pl.col("amount").sum().alias("volume"),
            pl.len().alias("trade_count"),
            pl.col("amount").filter(side == "buy").sum().alias("buy_volume_sum"),
            pl.col("amount").filter(side == "sell").sum().alias("sell_volume_sum"),
            (pl.col("price") * pl.col("amount")).sum().alias("notional"),
            (pl.col("lts") - pl.col("ts")).median().alias("dmed"),
            (pl.col("lts") - pl.col("ts")).mean().alias("dmean"),
            (pl.col("lts") - pl.col("ts")).min().alias("dmin"),
            (pl.col("lts") - pl.col("ts")).max().alias("dmax"),
        )
        d = self._dense(agg)
        for name in ("open", "high", "low", "close"):
            c[name] = d[name].to_numpy().astype(float)
        n = d["trade_count"].fill_null(0).to_numpy()
        c["trade_count"] = n
        for name in ("volume", "buy_volume_sum", "sell_volume_sum"):
            c[name] = d[name].fill_null(0.0).to_numpy()
        with np.errstate(all="ignore"):
            c["size_avg"] = np.where(n > 0, c["volume"] / n, np.nan)
            c["price_vwap"] = np.where(
                c["volume"] > 0, d["notional"].to_numpy().astype(float) / c["volume"], np.nan
            )
        for src, name in (
            ("dmed", "delay_median"),
            ("dmean", "delay_mean"),
            ("dmin", "delay_min"),
            ("dmax", "delay_max"),
        ):
            c[name] = d[src].to_numpy().astype(float) / 1000.0

    def _liquidations(self, table: pa.Table | None) -> None:
        c = self.cols
        if table is None:
            c["liquidation_buy_volume"] = c["liquidation_sell_volume"] = np.full(self.nb, np.nan)
            c["liquidation_count"] = np.full(self.nb, None)
            return
        df = self._frame(table, []).filter(pl.col("price").is_not_null() & pl.col("amount").is_not_null())
        side = pl.col("side").cast(pl.String)
        agg = df.group_by("bucket").agg(
            pl.len().alias("liquidation_count"),
            pl.col("amount").filter(side == "buy").sum().alias("liquidation_buy_volume"),
            pl.col("amount").filter(side == "sell").sum().alias("liquidation_sell_volume"),
        )
        d = self._dense(agg)
        c["liquidation_count"] = d["liquidation_count"].fill_null(0).to_numpy()
        for name in ("liquidation_buy_volume", "liquidation_sell_volume"):
            c[name] = d[name].fill_null(0.0).to_numpy()

    def _derivative(self, table: pa.Table | None) -> None:
        c = self.cols
        names = ("funding_rate", "predicted_funding_rate", "index_price", "mark_price", "open_interest")
        for name in names:
            c[name] = np.full(self.nb, np.nan)
        if table is not None:
            df = self._frame(table, [])
            for name in names:
                last = df.filter(pl.col(name).is_not_null() & pl.col(name).is_not_nan())
                last = last.group_by("bucket").agg(pl.col(name).last())
                c[name] = self._dense(last)[name].to_numpy().astype(float)
        # Reference: the last open interest seen earlier in the same day (a plain loop).
        oi = c["open_interest"]
        change = np.full(self.nb, np.nan)
        ref = math.nan
        for i, value in enumerate(oi):
            if not math.isnan(value):
                change[i] = value - ref
                ref = value
        c["oi_change"] = change
        liq = c["liquidation_buy_volume"] + c["liquidation_sell_volume"]
        known = ~np.isnan(change) & self.has_liquidations
        c["liquidation_with_rising_oi"] = np.where(known, np.where(change > 0, liq, 0.0), np.nan)
        c["liquidation_with_falling_oi"] = np.where(known, np.where(change < 0, liq, 0.0), np.nan)

    @staticmethod
    def book_row_values(table: pa.Table) -> dict[str, np.ndarray]:
        """Per-snapshot values with nansum over the five levels (a different summation than mdth's)."""

        def col(name: str) -> np.ndarray:
            return table.column(name).to_numpy(zero_copy_only=False).astype(float)

        b1, a1, bq1, aq1 = col("bid_price_1"), col("ask_price_1"), col("bid_amount_1"), col("ask_amount_1")
        bids = np.nansum(np.stack([col(f"bid_amount_{i}") for i in range(1, 6)]), axis=0)
        asks = np.nansum(np.stack([col(f"ask_amount_{i}") for i in range(1, 6)]), axis=0)
        with np.errstate(all="ignore"):
            mid = (a1 + b1) / 2
            return {
                "mid_price": mid,
                "spread_bps": np.where(mid > 0, 1e4 * (a1 - b1) / mid, np.nan),
                "depth_imbalance": np.where(bids + asks > 0, (bids - asks) / (bids + asks), np.nan),
                "microprice": np.where(bq1 + aq1 > 0, (b1 * aq1 + a1 * bq1) / (bq1 + aq1), np.nan),
            }

    def _book(self, table: pa.Table | None) -> None:
        names = ("mid_price", "spread_bps", "depth_imbalance", "microprice")
        for name in names:
            self.cols[name] = np.full(self.nb, np.nan)
            self.cols[f"{name}_twa"] = np.full(self.nb, np.nan)
            self.weights[name] = np.zeros(self.nb)
        if table is None or table.num_rows == 0:
            return
        ts = table.column("timestamp").cast(pa.int64()).to_numpy()
        eff = np.maximum.accumulate(ts)  # a row never takes effect before one applied earlier
        values = self.book_row_values(table)
        starts = self.start + np.arange(self.nb) * self.tf
        ends = starts + self.tf
        at_close = np.searchsorted(eff, ends, side="right") - 1
        # Integral of each value from the first snapshot to t, by cumulative sums over in-force intervals.
        length = np.diff(eff, append=eff[-1])
        for name in names:
            v = values[name]
            ok = ~np.isnan(v)
            level = float(np.median(v[ok])) if ok.any() else 0.0  # integrate deviations: less rounding
            vz = np.where(ok, v - level, 0.0)
            cum_v = np.concatenate(([0.0], np.cumsum(vz * length)))
            cum_t = np.concatenate(([0], np.cumsum(np.where(ok, length, 0))))

            def integral(t: np.ndarray, cum: np.ndarray, rate: np.ndarray) -> np.ndarray:
                i = np.searchsorted(eff, t, side="right") - 1
                safe = np.maximum(i, 0)
                out = cum[safe] + rate[safe] * (t - eff[safe])
                return np.where(i >= 0, out, 0.0)

            num = integral(ends, cum_v, vz) - integral(starts, cum_v, vz)
            den = integral(ends, cum_t, ok.astype(float)) - integral(starts, cum_t, ok.astype(float))
            self.weights[name] = den
            with np.errstate(all="ignore"):
                self.cols[f"{name}_twa"] = np.where(den > 0, num / den + level, np.nan)
            self.cols[name] = np.where(at_close >= 0, v[np.maximum(at_close, 0)], np.nan)

    def _options(self, table: pa.Table | None) -> None:
        atm = np.full(self.nb, np.nan)
        skew = np.full(self.nb, np.nan)
        self.cols["atm_mark_iv"], self.cols["skew_25d_put_call_ratio"] = atm, skew
        if table is None:
            return
        rows = table.select(["timestamp", "symbol", "type", "strike_price", "expiration", "delta", "mark_iv"])
        rows = rows.cast(
            pa.schema(
                [
                    pa.field("timestamp", pa.int64()),
                    pa.field("symbol", pa.string()),
                    pa.field("type", pa.string()),
                    pa.field("strike_price", pa.float64()),
                    pa.field("expiration", pa.int64()),
                    pa.field("delta", pa.float64()),
                    pa.field("mark_iv", pa.float64()),
                ]
            )
        ).to_pylist()
        state: dict[str, dict] = {}
        latest = -(2**63)
        j = 0
        for b in range(self.nb):
            end = self.start + (b + 1) * self.tf
            while j < len(rows) and max(latest, rows[j]["timestamp"]) <= end:
                latest = max(latest, rows[j]["timestamp"])
                state[rows[j]["symbol"]] = rows[j]
                j += 1
            live = [
                r
                for r in state.values()
                if r["type"] in ("call", "put")
                and r["expiration"] is not None
                and r["expiration"] >= end + HOUR
                and _finite(r["delta"])
                and _finite(r["mark_iv"])
            ]
            if not live:
                continue
            nearest = min(r["expiration"] for r in live)
            live = [r for r in live if r["expiration"] == nearest]

            a = best(live, lambda r: abs(abs(r["delta"]) - 0.5))
            put = best([r for r in live if r["type"] == "put"], lambda r: abs(r["delta"] + 0.25))
            call = best([r for r in live if r["type"] == "call"], lambda r: abs(r["delta"] - 0.25))
            atm[b] = a["mark_iv"]
            if put and call and call["mark_iv"] > 0:
                skew[b] = put["mark_iv"] / call["mark_iv"]


def best(candidates: list[dict], target) -> dict | None:
    """Smallest distance to the target delta; ties: lower strike, then the call."""
    ranked = sorted(candidates, key=lambda row: (target(row), row["strike_price"], row["type"] != "call"))
    return ranked[0] if ranked else None


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


# -- comparisons ------------------------------------------------------------------------------------------

EXACT = {
    "open",
    "high",
    "low",
    "close",
    "trade_count",
    "liquidation_count",
    "delay_min",
    "delay_max",
    "funding_rate",
    "predicted_funding_rate",
    "index_price",
    "mark_price",
    "open_interest",
    "oi_change",
    "mid_price",
    "microprice",
    "atm_mark_iv",
    "skew_25d_put_call_ratio",
}


def _values(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    if pa.types.is_integer(col.type):
        return np.array(col.to_pylist(), dtype=object)
    return col.to_numpy(zero_copy_only=False).astype(float)


def _assert_close(name: str, tf: str, got: np.ndarray, want: np.ndarray, exact: bool) -> None:
    assert got.shape == want.shape, (name, tf)
    if got.dtype == object or want.dtype == object:
        assert list(got) == list(want), f"{tf} {name}"
        return
    nan_got, nan_want = np.isnan(got), np.isnan(want)
    bad = np.flatnonzero(nan_got != nan_want)
    assert len(bad) == 0, f"{tf} {name}: NaN at {bad[:5]} got {got[bad[:5]]} want {want[bad[:5]]}"
    ok = ~nan_got
    if exact:
        diff = np.flatnonzero(got[ok] != want[ok])
        assert len(diff) == 0, f"{tf} {name}: {got[ok][diff[:5]]} != {want[ok][diff[:5]]}"
    else:
        np.testing.assert_allclose(got[ok], want[ok], rtol=1e-9, atol=1e-9, err_msg=f"{tf} {name}")


def test_dense_grid_and_times(case) -> None:
    date, _, out, _ = case
    start = day_start_us(date)
    assert set(out) == set(TF_NAMES)
    for tf, table in out.items():
        length = TIMEFRAMES[tf]
        assert (
            table.num_rows
            == US_PER_DAY // length
            == {"15s": 5760, "1m": 1440, "5m": 288, "15m": 96, "1h": 24, "4h": 6, "24h": 1}[tf]
        )
        ts = table.column("timestamp").cast(pa.int64()).to_numpy()
        out_ts = table.column("timestamp_out").cast(pa.int64()).to_numpy()
        assert np.array_equal(ts, start + np.arange(table.num_rows) * length)
        assert np.array_equal(out_ts, ts + length)  # available exactly at bucket end, never earlier


def test_every_feature_matches_the_independent_computation(case) -> None:
    _, _, out, oracle = case
    for tf in TF_NAMES:
        for feature in FEATURES:
            want = oracle[tf].cols[feature.name]
            got = _values(out[tf], feature.name)
            _assert_close(feature.name, tf, got, np.asarray(want), feature.name in EXACT)


def test_the_synthetic_days_exercise_every_feature(case) -> None:
    """Guard against a vacuous comparison: each given source yields real values somewhere."""
    _, given, out, _ = case
    t = out["15s"]
    non_nan = {
        f.name: int(np.sum(~np.isnan(_values(t, f.name).astype(float))))
        for f in FEATURES
        if not pa.types.is_integer(f.dtype)
    }
    assert non_nan["open"] > 1000 and non_nan["delay_median"] > 1000
    assert 0 < non_nan["open"] < 5760, "some 15s buckets must be empty"
    assert non_nan["oi_change"] > 100 and non_nan["mid_price_twa"] > 5000
    if given["options_chain"] is not None:
        assert non_nan["atm_mark_iv"] > 5000 and non_nan["skew_25d_put_call_ratio"] > 5000
    if given["liquidations"] is not None:
        assert sum(t.column("liquidation_count").to_pylist()) > 100
        rising = _values(t, "liquidation_with_rising_oi")
        assert np.nansum(rising) > 0
    else:
        assert t.column("liquidation_count").null_count == 5760


def _agg(kind: Aggregation, child: np.ndarray, ratio: int, weights: np.ndarray | None) -> np.ndarray:
    m = child.reshape(-1, ratio)
    with np.errstate(all="ignore"):
        if m.dtype == object:  # nullable counts
            if kind is Aggregation.SUM:
                return np.array([None if any(v is None for v in r) else sum(r) for r in m], dtype=object)
            raise AssertionError(kind)
        valid = ~np.isnan(m)
        if kind is Aggregation.SUM:
            return m.sum(axis=1)
        if kind is Aggregation.MAX:
            return np.where(valid.any(axis=1), np.nanmax(np.where(valid, m, -np.inf), axis=1), np.nan)
        if kind is Aggregation.MIN:
            return np.where(valid.any(axis=1), np.nanmin(np.where(valid, m, np.inf), axis=1), np.nan)
        if kind is Aggregation.LAST:
            return m[:, -1]
        if kind in (Aggregation.FIRST, Aggregation.LAST_NON_NAN):
            out = np.full(len(m), np.nan)
            for i, r in enumerate(m):
                vals = r[~np.isnan(r)]
                if len(vals):
                    out[i] = vals[0] if kind is Aggregation.FIRST else vals[-1]
            return out
        # Weighted means over the children with a value.
        w = weights.reshape(-1, ratio).astype(float)
        w = np.where(valid, w, 0.0)
        total = w.sum(axis=1)
        return np.where(total > 0, np.where(valid, m, 0.0).__mul__(w).sum(axis=1) / total, np.nan)


def test_coarser_timeframes_aggregate_the_1m_candles(case) -> None:
    _, _, out, oracle = case
    one = out["1m"]
    spec_kinds = {f.aggregation for f in FEATURES}
    handled = set()
    for tf in TF_NAMES[2:]:
        ratio = TIMEFRAMES[tf] // TIMEFRAMES["1m"]
        parent = out[tf]
        for feature in FEATURES:
            kind = feature.aggregation
            name = feature.name
            child = _values(one, name)
            got = _values(parent, name)
            if kind is Aggregation.RECOMPUTE_FROM_RAW:
                handled.add(kind)
                continue  # checked against raw data in the oracle test
            if kind is Aggregation.DERIVED:
                want = _derived(name, parent, tf)
            elif kind is Aggregation.VOLUME_WEIGHTED:
                want = _agg(kind, child, ratio, _values(one, "volume"))
            elif kind is Aggregation.TRADE_COUNT_WEIGHTED:
                counts = _values(one, "trade_count")
                want = _agg(
                    kind, child, ratio, np.array([0 if c is None else c for c in counts], dtype=float)
                )
            elif kind is Aggregation.TIME_WEIGHTED:
                want = _agg(kind, child, ratio, oracle["1m"].weights[name.removesuffix("_twa")])
            else:
                want = _agg(kind, child, ratio, None)
            handled.add(kind)
            exact = kind in (
                Aggregation.FIRST,
                Aggregation.LAST,
                Aggregation.MAX,
                Aggregation.MIN,
                Aggregation.LAST_NON_NAN,
            ) or (kind is Aggregation.SUM and child.dtype == object)
            _assert_close(name, tf, got, want, exact)
    assert handled == spec_kinds, f"aggregation kinds without a check: {spec_kinds - handled}"


def _derived(name: str, parent: pa.Table, tf: str) -> np.ndarray:
    """Derived features recomputed from the parent's own aggregated columns with the spec formula."""
    oi = _values(parent, "open_interest")
    change = np.full(len(oi), np.nan)
    ref = math.nan
    for i, v in enumerate(oi):
        if not math.isnan(v):
            change[i], ref = v - ref, v
    if name == "oi_change":
        return change
    liq = _values(parent, "liquidation_buy_volume") + _values(parent, "liquidation_sell_volume")
    sign = 1 if name == "liquidation_with_rising_oi" else -1
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(change) | np.isnan(liq), np.nan, np.where(sign * change > 0, liq, 0.0))
