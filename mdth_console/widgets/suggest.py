"""Completion for comma lists: suggests the rest of the last item (``BINANCE,DER`` -> ``BINANCE,DERIBIT``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from textual.suggester import Suggester


class CommaSuggester(Suggester):
    """Completes the item after the last comma from ``choices`` (a list, or a callable read at each keystroke)."""

    def __init__(self, choices: Iterable[str] | Callable[[], Iterable[str]]) -> None:
        super().__init__(use_cache=False, case_sensitive=False)
        self._choices = choices

    async def get_suggestion(self, value: str) -> str | None:
        head, sep, last = value.rpartition(",")
        last = last.lstrip()
        if not last:
            return None
        choices = self._choices() if callable(self._choices) else self._choices
        needle = last.lower()
        for choice in choices:
            if choice.lower().startswith(needle) and len(choice) > len(last):
                return f"{head}{sep}{choice}"
        return None
