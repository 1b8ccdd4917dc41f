"""Charts prebuilt into a ``Static``: plotext renders once per data change (and on resize), never per frame.

plotext's figure is module-global, so charts are built on the UI thread only, one after the other.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static


def _build_text(draw, width: int, height: int) -> Text:
    import plotext as plt

    fig = plt.figure
    fig.clear()
    fig.theme("simple")
    fig.plot_size(max(20, width), max(5, height))
    draw(fig)
    return Text.from_ansi(fig.build().string())


def _time_ticks(times_us: Sequence[int], n: int) -> tuple[list[int], list[str]]:
    """About ``n`` evenly spaced x ticks labelled HH:MM (UTC)."""
    if not times_us:
        return [], []
    step = max(1, len(times_us) // max(1, n))
    idx = list(range(0, len(times_us), step))
    labels = [dt.datetime.fromtimestamp(times_us[i] / 1e6, dt.UTC).strftime("%H:%M") for i in idx]
    return idx, labels


class Chart(Static):
    """A Static holding a prebuilt plot; ``set_candles``/``set_line`` rebuild only when the data changed."""

    DEFAULT_CSS = "Chart { height: 1fr; min-height: 6; }"

    def __init__(self, empty: str = "no data", **kwargs) -> None:
        super().__init__(Text(empty, style="dim"), **kwargs)
        self.empty = empty
        self._data: tuple | None = None
        self._kind = ""
        self._built_for: tuple | None = None

    def clear_chart(self, message: str | None = None) -> None:
        self._data, self._built_for = None, None
        self.update(Text(message or self.empty, style="dim"))

    def set_candles(self, times_us: list[int], o: list, h: list, low: list, c: list) -> None:
        data = ("candles", tuple(times_us), tuple(o), tuple(h), tuple(low), tuple(c))
        if data != self._data:
            self._data = data
            self._rebuild()

    def set_line(self, times_us: list[int], values: list[float], label: str = "") -> None:
        data = ("line", tuple(times_us), tuple(values), label)
        if data != self._data:
            self._data = data
            self._rebuild()

    def on_resize(self) -> None:
        self._rebuild()

    def _rebuild(self) -> None:
        if self._data is None:
            return
        width, height = self.content_size
        if width < 10 or height < 4:
            return
        key = (self._data, width, height)
        if key == self._built_for:
            return
        self._built_for = key
        kind = self._data[0]
        if kind == "candles":
            _, times, o, h, low, c = self._data
            keep = [i for i in range(len(times)) if None not in (o[i], h[i], low[i], c[i]) and o[i] == o[i]]
            if not keep:
                self.update(Text("no trades in these candles", style="dim"))
                return
            xs = list(range(len(keep)))
            data = {
                "date": xs,
                "open": [o[i] for i in keep],
                "close": [c[i] for i in keep],
                "high": [h[i] for i in keep],
                "low": [low[i] for i in keep],
            }
            ticks, labels = _time_ticks([times[i] for i in keep], max(2, width // 12))

            def draw(fig) -> None:
                fig.draw(fig.candlestick(data))
                if ticks:
                    fig.ruler("x").ticks(ticks, labels)

        else:
            _, times, values, label = self._data
            pairs = [(i, v) for i, v in enumerate(values) if v is not None and v == v]
            if not pairs:
                self.update(Text("no values yet", style="dim"))
                return
            ticks, labels = _time_ticks(list(times), max(2, width // 12))

            def draw(fig) -> None:
                signal = fig.signal([p[0] for p in pairs], [p[1] for p in pairs])
                signal.lines()
                fig.draw(signal)
                if ticks:
                    fig.ruler("x").ticks(ticks, labels)
                if label:
                    fig.title(label)

        try:
            self.update(_build_text(draw, width, height))
        except Exception as exc:  # a plotting corner case must never take the console down
            self.update(Text(f"chart unavailable: {exc}", style="dim"))
