"""Every path of the lake, in one place (DESIGN.md section 4). Paths are relative to the lake root."""

from __future__ import annotations

import datetime as dt
import re

INSTRUMENTS_ROOT = "instrument_availability/by_date"
RAW_ROOT = "raw_tick_data/by_date"
CANDLES_ROOT = "processed_candles/by_date"
REPORTS_ROOT = "validation_reports/by_date"
STREAMING_ROOT = "streaming"
STREAMING_RAW_ROOT = f"{STREAMING_ROOT}/raw"  # live journal parts, until their day is rolled into RAW_ROOT
JOBS_ROOT = "_jobs"
WAREHOUSE_STAGING_ROOT = "_warehouse/staging"  # gs:// load sources, kept only while a BigQuery load runs

_DAY_DIR = re.compile(r"day-(\d{4}-\d{2}-\d{2})")


def day_dir(day: dt.date) -> str:
    return f"day-{day.isoformat()}"


def instruments_path(day: dt.date) -> str:
    return f"{INSTRUMENTS_ROOT}/{day_dir(day)}/instruments.parquet"


def raw_dir(day: dt.date, data_type: str) -> str:
    return f"{RAW_ROOT}/{day_dir(day)}/data_type-{data_type}"


def raw_path(day: dt.date, data_type: str, instrument_key: str) -> str:
    return f"{raw_dir(day, data_type)}/{instrument_key}.parquet"


def candles_dir(day: dt.date, timeframe: str) -> str:
    return f"{CANDLES_ROOT}/{day_dir(day)}/timeframe-{timeframe}"


def candles_path(day: dt.date, timeframe: str, instrument_key: str) -> str:
    return f"{candles_dir(day, timeframe)}/{instrument_key}.parquet"


def report_path(day: dt.date) -> str:
    return f"{REPORTS_ROOT}/{day_dir(day)}/report.parquet"


def report_summary_path(day: dt.date) -> str:
    return f"{REPORTS_ROOT}/{day_dir(day)}/summary.json"


def quarantine_path(day: dt.date, data_type: str, name: str) -> str:
    """Malformed source lines kept by ``--on-bad-rows quarantine``, named after the raw file they were cut from:
    ``name`` is its instrument key, or ``{exchange}-{symbol}`` of a grouped source file."""
    return f"quarantine/by_date/{day_dir(day)}/data_type-{data_type}/{name}.bad.csv"


def streaming_day_dir(day: dt.date) -> str:
    return f"{STREAMING_RAW_ROOT}/{day_dir(day)}"


def streaming_part_dir(day: dt.date, data_type: str, instrument_key: str) -> str:
    return f"{streaming_day_dir(day)}/data_type-{data_type}/{instrument_key}"


def streaming_status_dir(day: dt.date) -> str:
    """Disconnect and reconnect records of the live journal for that day."""
    return f"{streaming_day_dir(day)}/status"


def streaming_part_name(first_local_us: int, session: str, seq: int) -> str:
    """A journal part's file name: sorts by its first ``local_timestamp``, unique per writer session."""
    return f"part-{first_local_us:017d}-{session}-{seq:06d}.parquet"


def streaming_group(day: dt.date, path: str) -> tuple[str, str] | None:
    """(data type, instrument key) of a journal part of that day, ``("status", "")`` for a status part."""
    rest = path.removeprefix(streaming_day_dir(day) + "/").split("/")
    if rest[0] == "status" and len(rest) == 2:
        return "status", ""
    if len(rest) == 3 and rest[0].startswith("data_type-") and rest[2].endswith(".parquet"):
        return rest[0].removeprefix("data_type-"), rest[1]
    return None


def job_dir(job_id: str) -> str:
    return f"{JOBS_ROOT}/{job_id}"


def job_spec_path(job_id: str) -> str:
    return f"{job_dir(job_id)}/spec.json"


def job_plan_path(job_id: str) -> str:
    return f"{job_dir(job_id)}/plan.parquet"


def job_shard_path(job_id: str, shard: int) -> str:
    return f"{job_dir(job_id)}/shards/{shard}.json"


def job_results_prefix(job_id: str) -> str:
    return f"{job_dir(job_id)}/results/"


def job_result_path(job_id: str, shard: int, seq: int) -> str:
    return f"{job_results_prefix(job_id)}{shard}-{seq:06d}.parquet"


def job_cancel_path(job_id: str) -> str:
    return f"{job_dir(job_id)}/cancel.json"


def job_log_path(job_id: str, shard: int) -> str:
    return f"{job_dir(job_id)}/logs/{shard}.log"


def day_of(path: str) -> dt.date | None:
    """The UTC day a lake path belongs to, if it has a ``day-YYYY-MM-DD`` folder."""
    match = _DAY_DIR.search(path)
    return dt.date.fromisoformat(match.group(1)) if match else None


def is_temp_name(name: str) -> bool:
    """Temp files of an atomic write in progress; listings never return them as data."""
    base = name.rsplit("/", 1)[-1]
    return base.startswith(".") and ".tmp-" in base
