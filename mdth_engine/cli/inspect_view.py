"""Renders `mdth inspect`: the definition, then a compact calendar (data types x days) and last known sizes."""

from __future__ import annotations

from typing import Any

from mdth_engine.cli.common import human_bytes, is_tty, print_json

PRESENT, EMPTY, ABSENT = "●", "○", "·"


def render_inspection(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(report)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(force_terminal=is_tty(), no_color=not is_tty())
    definition = Table(show_header=False, box=None, title=Text(report["key"], style="bold"))
    for name, value in report["definition"].items():
        if value not in (None, "", []):
            definition.add_row(Text(name, style="dim"), Text(_text(value)))
    console.print(definition)

    days = report["calendar"]
    types = sorted({t for day in days for t in day["data"]} | set(report["definition"]["data_types"] or []))
    first, last = (days[0]["day"], days[-1]["day"]) if days else ("", "")
    calendar = Table(
        title=f"lake calendar {first} .. {last}  ({PRESENT} rows  {EMPTY} empty at source  {ABSENT} not in the lake)",
        header_style="bold",
        pad_edge=False,
    )
    calendar.add_column("data type")
    for day in days:
        calendar.add_column(day["day"][8:], justify="center", min_width=2)  # day of month
    for name in ("last day", "rows", "size"):
        calendar.add_column(name, justify="right")
    for data_type in types:
        cells = []
        latest: tuple[str, dict[str, Any]] | None = None
        for day in days:
            item = day["data"].get(data_type)
            cells.append(ABSENT if item is None else PRESENT if item["rows"] else EMPTY)
            if item is not None:
                latest = (day["day"], item)
        tail = (
            [latest[0], f"{latest[1]['rows']:,}", human_bytes(latest[1]["bytes"])] if latest else ["", "", ""]
        )
        calendar.add_row(data_type, *cells, *tail)
    console.print(calendar)
    unlisted = [d["day"] for d in days if not d["listed"]]
    if unlisted:
        console.print(Text(f"not in the instrument master on: {', '.join(unlisted)}"))


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)
