"""A DataTable updated in place by row key: only changed cells are written, rows are rebuilt only when the
set or order of keys changes, and the cursor stays on the same row across refreshes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable


def row_matches(haystack: str, query: str) -> bool:
    """k9s/htop-style filter: space-separated terms all match; ``!term`` must not match; ``a|b`` either."""
    text = haystack.lower()
    for term in query.lower().split():
        negate = term.startswith("!")
        term = term[1:] if negate else term
        if not term:
            continue
        hit = any(alt and alt in text for alt in term.split("|"))
        if hit == negate:
            return False
    return True


def _plain(cell: Any) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


class KeyedTable(DataTable):
    """``sync(rows)`` with ``rows`` = [(key, [cells...])]; cells are ``Text`` (never markup) or renderables."""

    def __init__(self, columns: Sequence[tuple[str, str, int | None]], **kwargs: Any) -> None:
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", False)
        super().__init__(**kwargs)
        self._columns = list(columns)
        self._cells: dict[str, list[str]] = {}
        self._order: list[str] = []
        self.filter_text = ""
        self._all_rows: list[tuple[str, list[Any]]] = []

    def on_mount(self) -> None:
        for label, key, width in self._columns:
            self.add_column(label, key=key, width=width)

    @property
    def current_key(self) -> str | None:
        if not self._order or self.cursor_row < 0 or self.cursor_row >= len(self._order):
            return None
        return self._order[self.cursor_row]

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self.sync(self._all_rows)

    def sync(self, rows: Sequence[tuple[str, list[Any]]]) -> None:
        self._all_rows = list(rows)
        if self.filter_text:
            rows = [
                r
                for r in rows
                if row_matches(" ".join(_plain(c) for c in r[1]) + " " + r[0], self.filter_text)
            ]
        keys = [k for k, _ in rows]
        signatures = {k: [_plain(c) + str(getattr(c, "style", "")) for c in cells] for k, cells in rows}
        if keys != self._order:
            selected = self.current_key
            with self.app.batch_update():
                self.clear()
                for key, cells in rows:
                    self.add_row(*cells, key=key)
            self._order = keys
            self._cells = signatures
            if selected in keys:
                self.move_cursor(row=keys.index(selected), animate=False)
            return
        column_keys = [c[1] for c in self._columns]
        with self.app.batch_update():
            for key, cells in rows:
                old = self._cells.get(key)
                new = signatures[key]
                if old == new:
                    continue
                for i, cell in enumerate(cells):
                    if old is None or old[i] != new[i]:
                        self.update_cell(key, column_keys[i], cell, update_width=self._columns[i][2] is None)
                self._cells[key] = new
