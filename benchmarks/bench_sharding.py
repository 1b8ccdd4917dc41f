"""How evenly a month of downloads splits over 20 shards: LPT on expected bytes vs hash sharding.

A synthetic but realistic venue mix (Binance spot and USD-M perps, Bybit perps, OKX spot/swap/futures,
Deribit perps, futures and the BTC/ETH options chains) for 31 days: every (day, data type, instrument) unit
gets an "actual" size drawn per data type and instrument type, heavy tailed (BTC/ETH majors large, a long
tail of small alts, the options chains huge), with day-to-day noise and quieter weekends.

LPT is planned on what the planner would know, through the real ``estimate_bytes`` against a lake of sparse
files: a warm lake (the last week of the month before already downloaded) and a cold one (the default table
only), plus LPT on the true sizes as the floor and on true sizes blurred by one day's noise (what estimates
from earlier days can hope for). Baselines: the original system's ``abs(hash(instrument_key))
% N`` (Python's salted hash, so every process splits differently; 10 salts) and a stable per-unit crc32.
The spread is the largest shard's true bytes over the mean: the job takes that many times the ideal.

    .venv/bin/python benchmarks/bench_sharding.py [--shards 20] [--seed 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import random
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

from mdth_engine.jobs.estimate import clear_cache, estimate_bytes
from mdth_engine.jobs.sharding import lpt_assign, shard_loads, spread
from mdth_engine.storage import layout
from mdth_engine.storage.store import open_store

MB = 1024 * 1024
MONTH = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(31)]
WARM_DAYS = [dt.date(2023, 12, 25) + dt.timedelta(days=i) for i in range(7)]

# Median true daily size of a mid-cap instrument's file (bytes), per (data type, instrument type).
TRUE_MEDIAN = {
    ("trades", "SPOT_PAIR"): 5 * MB,
    ("book_snapshot_5", "SPOT_PAIR"): 20 * MB,
    ("trades", "PERPETUAL"): 12 * MB,
    ("book_snapshot_5", "PERPETUAL"): 35 * MB,
    ("derivative_ticker", "PERPETUAL"): 4 * MB,
    ("liquidations", "PERPETUAL"): 120 * 1024,
    ("trades", "FUTURE"): 1.5 * MB,
    ("book_snapshot_5", "FUTURE"): 10 * MB,
    ("derivative_ticker", "FUTURE"): 2 * MB,
    ("options_chain", "OPTION_CHAIN"): 1200 * MB,
}
TYPES = {
    "SPOT_PAIR": ("trades", "book_snapshot_5"),
    "PERPETUAL": ("trades", "book_snapshot_5", "derivative_ticker", "liquidations"),
    "FUTURE": ("trades", "book_snapshot_5", "derivative_ticker"),
    "OPTION_CHAIN": ("options_chain",),
}
TIER = {"BTC": 30.0, "ETH": 14.0}
TOP = ("SOL", "XRP", "DOGE", "BNB", "ADA", "AVAX", "LINK", "TON", "TRX", "DOT")


def universe(rng: random.Random) -> list[tuple[str, str, str]]:
    """(exchange, instrument key, instrument type) of the mix."""
    alts = [f"A{i:03d}" for i in range(160)]
    bases = ["BTC", "ETH", *TOP, *alts]
    out: list[tuple[str, str, str]] = []
    for b in bases[:60]:
        out.append(("binance", f"BINANCE:SPOT_PAIR:{b}-USDT", "SPOT_PAIR"))
    for b in bases[:80]:
        out.append(("binance-futures", f"BINANCE-FUTURES:PERPETUAL:{b}-USDT", "PERPETUAL"))
    for b in bases[:50]:
        out.append(("bybit", f"BYBIT:PERPETUAL:{b}-USDT", "PERPETUAL"))
    for b in bases[:30]:
        out.append(("okex", f"OKX:SPOT_PAIR:{b}-USDT", "SPOT_PAIR"))
        out.append(("okex-swap", f"OKX-SWAP:PERPETUAL:{b}-USDT", "PERPETUAL"))
    for b in ("BTC", "ETH"):
        for expiry in ("240126", "240223", "240329", "240628"):
            out.append(("okex-futures", f"OKX-FUTURES:FUTURE:{b}-USD-{expiry}", "FUTURE"))
            out.append(("deribit", f"DERIBIT:FUTURE:{b}-USD-{expiry}", "FUTURE"))
        out.append(("deribit", f"DERIBIT:PERPETUAL:{b}-USD", "PERPETUAL"))
        out.append(("deribit", f"DERIBIT:OPTION_CHAIN:{b}-USD", "OPTION_CHAIN"))
    return out


def base_of(key: str) -> str:
    return key.split(":")[2].split("-")[0]


def true_sizes(rng: random.Random, instruments, days) -> dict[tuple[dt.date, str, str], int]:
    """(day, data type, key) -> true bytes: median x tier x per-instrument lognormal x daily noise x weekend."""
    popularity = {}
    for _, key, itype in instruments:
        b = base_of(key)
        if itype == "OPTION_CHAIN":  # the median is the BTC chain's already; ETH's is about half
            popularity[key] = (1.0 if b == "BTC" else 0.5) * math.exp(rng.gauss(0, 0.2))
        elif b in TIER:
            popularity[key] = TIER[b] * math.exp(rng.gauss(0, 0.3))
        else:  # a heavy tail among the alts
            popularity[key] = (3.0 if b in TOP else 1.0) * math.exp(rng.gauss(0, 0.9))
    out = {}
    for day in days:
        weekend = 0.7 if day.weekday() >= 5 else 1.0
        for _, key, itype in instruments:
            for dtype in TYPES[itype]:
                noise = math.exp(rng.gauss(0, 0.3))
                out[(day, dtype, key)] = max(
                    1, int(TRUE_MEDIAN[(dtype, itype)] * popularity[key] * noise * weekend)
                )
    return out


def sparse_lake(root: Path, sizes: dict[tuple[dt.date, str, str], int]) -> None:
    """Files of the given sizes without writing their bytes (sparse), laid out as the lake."""
    for (day, dtype, key), size in sizes.items():
        path = root / layout.raw_path(day, dtype, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size)


def plan_estimates(lake: Path, instruments) -> tuple[dict[str, int], float]:
    """unit id -> estimate_bytes(...) as the planner calls it, in day order; and the seconds it took."""
    clear_cache()
    store = open_store(str(lake))
    out = {}
    t0 = time.perf_counter()
    for day in MONTH:
        for exchange, key, itype in instruments:
            for dtype in TYPES[itype]:
                out[f"{day}/{dtype}/{key}"] = estimate_bytes(store, dtype, itype, exchange, key, day)
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    n = args.shards
    rng = random.Random(args.seed)
    instruments = universe(rng)
    history = true_sizes(rng, instruments, WARM_DAYS + MONTH)
    truth = {f"{d}/{t}/{k}": size for (d, t, k), size in history.items() if d >= MONTH[0]}
    total = sum(truth.values())
    biggest = max(truth.values())

    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-sharding-") as tmp:
        warm, cold = Path(tmp) / "warm", Path(tmp) / "cold"
        sparse_lake(warm, {k: v for k, v in history.items() if k[0] < MONTH[0]})
        for label, lake in (
            ("warm lake: last week of Dec present", warm),
            ("cold lake: default table only", cold),
        ):
            est, secs = plan_estimates(lake, instruments)
            t0 = time.perf_counter()
            assignment = lpt_assign(list(est.items()), n)
            lpt_s = time.perf_counter() - t0
            rows.append(
                (
                    f"LPT on estimate_bytes, {label}",
                    spread(shard_loads(assignment, truth, n)),
                    f"estimates {secs:.2f}s, LPT {lpt_s * 1000:.0f} ms",
                )
            )
    rows.append(
        (
            "LPT on true sizes (the floor)",
            spread(shard_loads(lpt_assign(list(truth.items()), n), truth, n)),
            "",
        )
    )
    noisy = {uid: size * math.exp(rng.gauss(0, 0.3)) for uid, size in truth.items()}
    rows.append(
        (
            "LPT on true sizes x one day's noise (sigma 0.3)",
            spread(shard_loads(lpt_assign(list(noisy.items()), n), truth, n)),
            "estimates as good as one other day's size",
        )
    )

    salted = []
    for salt in range(10):  # Python's hash() is salted per process: 10 processes, 10 different splits
        by_key = {uid: abs(hash((salt, uid.rsplit("/", 1)[1]))) % n for uid in truth}
        salted.append(spread(shard_loads(by_key, truth, n)))
    rows.append(
        (
            "abs(hash(instrument_key)) % N (the original; 10 salts)",
            statistics.mean(salted),
            f"worst {max(salted):.2f}",
        )
    )
    by_unit = {uid: zlib.crc32(uid.encode()) % n for uid in truth}
    rows.append(("crc32(unit_id) % N (stable per-unit hash)", spread(shard_loads(by_unit, truth, n)), ""))

    print(
        f"{len(instruments)} instruments, {len(truth)} units over {len(MONTH)} days, {total / 1024**3:.1f} GiB; "
        f"N={n} shards, ideal {total / n / 1024**3:.2f} GiB per shard; largest unit {biggest / 1024**3:.2f} GiB "
        f"(floor for any split: {max(1.0, biggest / (total / n)):.2f}); seed {args.seed}, python {sys.version.split()[0]}"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'strategy'.ljust(width)}  spread (max/mean)  notes")
    for label, value, note in rows:
        print(f"{label.ljust(width)}  {value:17.3f}  {note}")


if __name__ == "__main__":
    main()
