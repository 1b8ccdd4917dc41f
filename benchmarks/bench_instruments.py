"""Instrument master: a day of every simulator venue through the real client, and a Deribit-sized day.

- all venues: ``mdth instruments`` for one day against the simulator (metadata fetched with tardis-dev, keys
  mapped, the day file written), cold (first day of a run) and warm (the next days reuse the venue snapshot);
- Deribit-sized: the mapping of a synthetic Deribit day with thousands of options (``rows_for_day`` + the write),
  to show the per-instrument cost without the network.

Run: ``.venv/bin/python benchmarks/bench_instruments.py [--options 6000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def deribit_day(n_options: int) -> tuple[list[dict], dict[str, dict]]:
    """Dataset symbols and metadata for a Deribit-like day: expiries x strikes x call/put, BTC and ETH."""
    symbols, infos = [], {}
    expiries = [dt.date(2024, 3, 2) + dt.timedelta(days=d) for d in (0, 1, 2, 6, 13, 27, 55, 118, 209, 300)]
    per = max(1, n_options // (2 * 2 * len(expiries)))
    for base, spot in (("BTC", 60_000), ("ETH", 3_000)):
        for expiry in expiries:
            code = f"{expiry.day}{MONTHS[expiry.month - 1]}{expiry:%y}"
            for i in range(per):
                strike = int(spot * (0.5 + i / per))
                for kind in ("C", "P"):
                    sid = f"{base}-{code}-{strike}-{kind}"
                    symbols.append(
                        {
                            "id": sid,
                            "type": "option",
                            "availableSince": "2024-01-01T00:00:00.000Z",
                            "dataTypes": ["trades", "quotes", "book_snapshot_5"],
                        }
                    )
                    infos[sid] = {
                        "id": sid,
                        "datasetId": sid,
                        "type": "option",
                        "baseCurrency": base,
                        "quoteCurrency": base,
                        "expiry": f"{expiry}T08:00:00.000Z",
                        "strikePrice": strike,
                        "optionType": "call" if kind == "C" else "put",
                        "inverse": True,
                        "priceIncrement": 0.0005,
                        "amountIncrement": 0.1,
                        "minTradeAmount": 0.1,
                        "contractMultiplier": 1,
                    }
    symbols.append(
        {
            "id": "OPTIONS",
            "type": "option",
            "availableSince": "2024-01-01T00:00:00.000Z",
            "dataTypes": ["options_chain", "quotes", "trades"],
        }
    )
    return symbols, infos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--options", type=int, default=6000)
    args = parser.parse_args()

    from mdth_engine.api import run_stage
    from mdth_engine.core.settings import load_settings
    from mdth_engine.simulator import SimulatorServer
    from mdth_engine.stages.base import Request
    from mdth_engine.stages.instruments import VenueSnapshot, rows_for_day, to_table
    from mdth_engine.storage.local import LocalStore
    from mdth_engine.storage.parquet import write_table

    with SimulatorServer() as sim, tempfile.TemporaryDirectory() as lake:
        settings = load_settings(lake=lake, tardis_api_url=sim.api_url, tardis_datasets_url=sim.datasets_url)
        t0 = time.perf_counter()
        first = asyncio.run(
            run_stage(Request("instruments", dt.date(2024, 3, 1), dt.date(2024, 3, 1)), settings)
        )
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        week = asyncio.run(
            run_stage(Request("instruments", dt.date(2024, 3, 2), dt.date(2024, 3, 8)), settings)
        )
        warm = (time.perf_counter() - t0) / 7
    print(
        f"all simulator venues, one day (cold, incl. metadata fetch): {cold:6.2f} s, {first.rows:,} instruments"
    )
    print(
        f"all simulator venues, per day over a week (one fetch/run):  {warm:6.2f} s, {week.rows // 7:,} per day"
    )

    symbols, infos = deribit_day(args.options)
    snap = VenueSnapshot("DERIBIT", "deribit", symbols, infos)
    with tempfile.TemporaryDirectory() as lake:
        t0 = time.perf_counter()
        rows, _ = rows_for_day(snap, dt.date(2024, 3, 1))
        table = to_table(rows)
        write_table(LocalStore(lake), "day.parquet", table, {"data_type": "instruments"})
        elapsed = time.perf_counter() - t0
    print(f"Deribit-sized day, {table.num_rows:,} rows (options + chains), map + write:   {elapsed:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
