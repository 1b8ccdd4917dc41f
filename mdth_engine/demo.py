"""`make demo` / `python -m mdth_engine.demo`: the built-in simulator, the whole pipeline on a small lake, a tour.

Runs the real `mdth` commands (as a user would type them) against a simulator started in this process, then
opens the console on a TTY, or prints what the lake holds and the commands to try next.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

DAYS = ("2024-03-01", "2024-03-03")
SYMBOLS = (
    "BINANCE:SPOT_PAIR:BTC-USDT",
    "BINANCE:SPOT_PAIR:ETH-USDT",
    "BINANCE-FUTURES:PERPETUAL:BTC-USDT",
    "DERIBIT:PERPETUAL:BTC-USD",
    "DERIBIT:OPTION_CHAIN:BTC-USD",
    "BYBIT:PERPETUAL:BTC-USDT",
    "OKX-SWAP:PERPETUAL:BTC-USDT",
)


def _run(args: list[str], env: dict[str, str]) -> int:
    print(f"\n$ mdth {shlex.join(args)}", flush=True)
    return subprocess.call([sys.executable, "-m", "mdth_engine.cli", *args], env=env)


def main() -> int:
    from mdth_engine.simulator import SimulatorServer

    lake = os.environ.get("MDTH_LAKE", "./mdth-lake")
    with SimulatorServer() as sim:
        env = {
            **os.environ,
            "MDTH_LAKE": lake,
            "MDTH_TARDIS_API_URL": sim.api_url,
            "MDTH_TARDIS_DATASETS_URL": sim.datasets_url,
            "MDTH_BINANCE_REST_URL": sim.base_url,  # klines for the cross-source check (spot and futures)
            "MDTH_TARDIS_API_KEY": os.environ.get("MDTH_TARDIS_API_KEY", "demo-key-for-the-simulator"),
        }
        print(f"simulator on {sim.base_url}  (Tardis API {sim.api_url}, datasets {sim.datasets_url})")
        code = _run(
            ["pipeline", "--start", DAYS[0], "--end", DAYS[1], "--symbols", ",".join(SYMBOLS)],
            env,
        )
        _run(["lake", "ls"], env)
        if sys.stdin.isatty() and sys.stdout.isatty() and not os.environ.get("CI"):
            _run(["console"], env)
        else:
            print(
                "\nNext, try (the simulator must be running for commands that fetch; `mdth sim serve` prints the env):\n"
                f"  .venv/bin/mdth --lake {lake} instruments list --date {DAYS[0]} --venue DERIBIT --type OPTION_CHAIN\n"
                f"  .venv/bin/mdth --lake {lake} inspect BINANCE:SPOT_PAIR:BTC-USDT --date {DAYS[1]}\n"
                f"  .venv/bin/mdth --lake {lake} lake ls raw_tick_data/\n"
                f"  .venv/bin/mdth --lake {lake} console\n"
            )
    return code


if __name__ == "__main__":
    from mdth_engine.core.shutdown import leave

    leave(main())
