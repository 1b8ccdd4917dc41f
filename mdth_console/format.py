"""Numbers and engine strings as the console shows them; engine text is always plain ``Text``, never markup."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from rich.text import Text

# Colours by state or outcome, in theme-independent ANSI names so `--theme ansi-dark` reads the same.
STATE_STYLES = {
    "done": "green",
    "running": "cyan",
    "launched": "cyan",
    "pending": "bright_black",
    "failed": "red",
    "dead": "red",
    "stale": "yellow",
    "interrupted": "yellow",
    "cancelled": "yellow",
}


def plain(value: Any, style: str = "") -> Text:
    """Any engine value as literal text: a symbol or error containing ``[/x]`` shows as written."""
    return Text("" if value is None else str(value), style=style)


def human_bytes(n: float | None) -> str:
    """1024-based, like `mdth lake ls`."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def duration(seconds: float | None) -> str:
    """``-`` when unknown, else 42s, 3m05s, 2h10m."""
    if seconds is None or (isinstance(seconds, float) and not math.isfinite(seconds)):
        return "-"
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def count(n: float | None) -> str:
    """Compact counts: 950, 12.3k, 4.1M."""
    if n is None:
        return "-"
    value = float(n)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def number(value: Any, digits: int = 6) -> str:
    """A feature value: NaN and None as ``-``, floats with ``digits`` significant digits."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.{digits}g}"
    return str(value)


def bar(done: float, total: float, width: int = 12) -> Text:
    """A progress bar in cells (eighths), with the percentage; safe in any terminal font with block glyphs."""
    frac = 0.0 if total <= 0 else min(1.0, max(0.0, done / total))
    eighths = round(frac * width * 8)
    full, part = divmod(eighths, 8)
    cells = "█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "")
    text = Text(cells.ljust(width), style="green" if frac >= 1 else "cyan")
    text.append(f" {frac * 100:3.0f}%", style="")
    return text


def progress(done: int, total: int, width: int = 8) -> Text:
    """A bar followed by ``done/total``: one column where 80 columns leave no room for two."""
    frac = 0.0 if total <= 0 else min(1.0, max(0.0, done / total))
    eighths = round(frac * width * 8)
    full, part = divmod(eighths, 8)
    cells = "█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "")
    text = Text(cells.ljust(width, "·"), style="green" if frac >= 1 else "cyan")
    text.append(f" {done}/{total}")
    return text


def short_job(job_id: str) -> str:
    """``download-20240303-110000-aaaaaa`` -> ``download…aaaaaa`` (unique enough beside a time column)."""
    parts = job_id.rsplit("-", 3)
    return f"{parts[0]}…{parts[-1]}" if len(parts) == 4 else job_id


def state_text(state: str) -> Text:
    return plain(state, STATE_STYLES.get(state, ""))


SILENT_SHARD_S = 30.0  # a running shard whose heartbeat is older than this makes its job read "stale"


def job_state(status: Any) -> str:
    """A job's state as the console shows it: a running job with any silent shard reads ``stale``."""
    if status.state == "running" and any(
        s.state == "running" and s.age(status.at) > SILENT_SHARD_S for s in status.shards
    ):
        return "stale"
    return status.state


def timestamp(value: Any) -> str:
    """An epoch (s), ISO string or datetime as ``YYYY-MM-DD HH:MM:SS`` UTC."""
    if value in (None, ""):
        return "-"
    if isinstance(value, int | float):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def first_line(exc: BaseException | str) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
