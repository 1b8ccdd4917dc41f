"""Renders `mdth inspect`: the definition, then a compact calendar of data types per day."""

from __future__ import annotations

from typing import Any

from mdth_engine.cli.common import human_bytes, is_tty, print_json


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
    types = sorted(
        {t for day in report["calendar"] for t in day["data"]} | set(report["definition"]["data_types"])
    )
    calendar = Table(title="lake calendar (rows / bytes per data type)", header_style="bold")
    calendar.add_column("day")
    calendar.add_column("listed")
    for t in types:
        calendar.add_column(t, justify="right")
    for day in report["calendar"]:
        cells = []
        for t in types:
            item = day["data"].get(t)
            cells.append(Text(f"{item['rows']:,} / {human_bytes(item['bytes'])}" if item else "·"))
        calendar.add_row(day["day"], "yes" if day["listed"] else "no", *cells)
    console.print(calendar)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)
