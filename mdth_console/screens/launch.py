"""Launch: a form for any stage or the whole pipeline; shows the plan (units, expected bytes, shards) and the
equivalent `mdth` command before anything runs, then starts it as a job that outlives the console."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from mdth_console.format import first_line, human_bytes
from mdth_console.screens.base import BaseScreen
from mdth_console.widgets.suggest import CommaSuggester

STAGES = ("pipeline", "instruments", "download", "candles", "validate", "upload")
VENUES = ("BINANCE", "BINANCE-FUTURES", "DERIBIT", "BYBIT", "BYBIT-SPOT", "OKX", "OKX-SWAP", "OKX-FUTURES")
TYPES = ("SPOT_PAIR", "PERPETUAL", "FUTURE", "OPTION", "OPTION_CHAIN")
DATA_TYPES = (
    "trades",
    "book_snapshot_5",
    "book_snapshot_25",
    "incremental_book_L2",
    "quotes",
    "derivative_ticker",
    "liquidations",
    "options_chain",
    "book_ticker",
    "all",
)
TIMEFRAMES = ("15s", "1m", "5m", "15m", "1h", "4h", "24h")
# What a plan's byte estimate measures, per stage; the others' (validate, instruments) only weigh units.
BYTES_MEANING = {
    "download": "to download",
    "pipeline": "to download",
    "candles": "to read",
    "upload": "to upload",
}
# Which fields each stage takes (the others are disabled).
FIELDS = {
    "pipeline": {"venues", "types", "data_types", "symbols", "bases", "max_instruments", "shards", "backend"},
    "instruments": {"venues", "types", "force"},
    "download": {
        "venues",
        "types",
        "data_types",
        "symbols",
        "bases",
        "max_instruments",
        "shards",
        "backend",
        "force",
    },
    "candles": {
        "venues",
        "types",
        "symbols",
        "bases",
        "max_instruments",
        "timeframes",
        "shards",
        "backend",
        "force",
    },
    "validate": {"venues", "types", "data_types", "symbols", "bases", "max_instruments", "shards", "backend"},
    "upload": {"timeframes", "shards", "backend", "force"},
}
TEXT_FIELDS = (
    "start",
    "end",
    "venues",
    "types",
    "data_types",
    "timeframes",
    "symbols",
    "bases",
    "max_instruments",
    "shards",
)


class LaunchScreen(BaseScreen):
    MODE = "launch"
    MAIN = "f-stage"
    FILTERABLE = False
    HELP = (
        "Fill the form (Tab moves, comma lists complete with →); the plan and the equivalent command update as "
        "you type. ctrl+l (or the Launch button) starts it as a job of worker processes: it keeps running when "
        "the console closes. A pipeline runs download, candles, validate and upload as successive jobs. "
        ":launch STAGE --start D … sets the whole form: fields it does not give go back to their defaults "
        "(no --end: one day)."
    )
    BINDINGS = [
        Binding("ctrl+l", "launch", "Launch", id="launch.go"),
        Binding("escape", "leave_field", "Leave field", show=False, id="launch.leave"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0
        self.request: Any = None
        self.preview_ok = False
        self.launching = False
        self.shards, self.backend_name = 1, "local"
        self._preview_timer: Any = None
        self.default_start = ""  # the day after the lake's last day of ticks, once the lake is read
        self.from_command = False  # a `:launch` command set the form: it says the whole selection

    def compose_body(self) -> ComposeResult:
        def field(name: str, placeholder: str, suggest: Any = None) -> Input:
            box = Input(placeholder=placeholder, id=f"f-{name}", compact=True, suggester=suggest)
            box.cursor_blink = False
            return box

        known = lambda: getattr(self.app, "known_keys", [])  # noqa: E731
        with Vertical(id="launch-body"):
            if self.read_only:
                yield Static(
                    Text(
                        "read-only: the plan and the command are shown, launching is off", style="bold yellow"
                    )
                )
            with Grid(id="launch-form"):
                yield Label("stage")
                yield Select(
                    [(s, s) for s in STAGES], value="download", allow_blank=False, id="f-stage", compact=True
                )
                yield Label("backend")
                yield Select(
                    [("local", "local"), ("gce", "gce")],
                    value="local",
                    allow_blank=False,
                    id="f-backend",
                    compact=True,
                )
                yield Label("start")
                yield field("start", "YYYY-MM-DD")
                yield Label("end")
                yield field("end", "YYYY-MM-DD (= start)")
                yield Label("venues")
                yield field("venues", "all, or BINANCE,DERIBIT", CommaSuggester(VENUES))
                yield Label("types")
                yield field("types", "SPOT_PAIR,PERPETUAL,…", CommaSuggester(TYPES))
                yield Label("data types")
                yield field("data_types", "default 5, or trades,…", CommaSuggester(DATA_TYPES))
                yield Label("timeframes")
                yield field("timeframes", "all, or 1m,1h", CommaSuggester(TIMEFRAMES))
                yield Label("symbols", classes="wide-label")
                yield field(
                    "symbols", "keys or Tardis symbols, comma list (→ completes keys)", CommaSuggester(known)
                )
                yield Label("bases")
                yield field("bases", "BTC,ETH")
                yield Label("max/venue")
                yield field("max_instruments", "no limit")
                yield Label("shards")
                yield field("shards", "1")
                yield Label("force")
                yield Checkbox("rewrite", id="f-force", compact=True)
            yield Static("", id="launch-plan")
            yield Static("", id="launch-command")
            with Horizontal(id="launch-actions"):
                if not self.read_only:
                    yield Button("Launch  ctrl+l", id="launch-go", variant="success", compact=True)
                yield Static("", id="launch-status")

    def on_mount(self) -> None:
        self.query_one("#f-shards", Input).value = "1"
        self.apply_stage()
        self.run_worker(self._default_days, thread=True, group="launch-days", exit_on_error=False)
        self.focus_main()

    def _default_days(self) -> None:
        try:
            overview = self.backend.overview()
        except Exception:
            overview = {"tick_days": [], "tick_keys": []}
        self.app.call_from_thread(self._set_defaults, overview)

    def _set_defaults(self, overview: dict[str, Any]) -> None:
        """Continue what the lake holds: the day after its last day of ticks, for the instruments it holds
        (never the whole master of a venue by accident); yesterday on an empty lake."""
        import datetime as dt

        days = overview.get("tick_days") or []
        if days:
            day = dt.date.fromisoformat(days[-1]) + dt.timedelta(days=1)
        else:
            day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        self.default_start = day.isoformat()
        start = self.query_one("#f-start", Input)
        start.value = start.value or self.default_start
        keys = overview.get("tick_keys") or []
        symbols = self.query_one("#f-symbols", Input)
        if keys and len(keys) <= 50 and not symbols.value and not self.from_command:
            symbols.value = ",".join(keys)
        self.schedule_preview()

    # -- form ----------------------------------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: self.query_one(f"#f-{name}", Input).value.strip() for name in TEXT_FIELDS
        }
        out["stage"] = self.query_one("#f-stage", Select).value
        out["backend"] = self.query_one("#f-backend", Select).value
        out["force"] = self.query_one("#f-force", Checkbox).value
        return out

    def reset_form(self) -> None:
        """Every field back to its default, so a `:launch` command says the whole form, like the `mdth` command
        it mirrors, and never inherits (say) the end date of the previous one."""
        defaults = {"start": self.default_start, "shards": "1"}
        self.query_one("#f-stage", Select).value = "download"
        self.query_one("#f-backend", Select).value = "local"
        for name in TEXT_FIELDS:
            self.query_one(f"#f-{name}", Input).value = defaults.get(name, "")
        self.query_one("#f-force", Checkbox).value = False
        self.from_command = True

    def prefill(self, fields: dict[str, str]) -> None:
        """Set the form from `:launch` arguments: what they give, and defaults for the rest (unknown stages
        are refused with a toast). A bare `:launch` keeps the form as it is."""
        if fields:
            self.reset_form()
        if "stage" in fields:
            if fields["stage"] not in STAGES:
                self.show_error(f"unknown stage {fields['stage']!r}; use one of {', '.join(STAGES)}")
            else:
                self.query_one("#f-stage", Select).value = fields["stage"]
        if "backend" in fields:
            if fields["backend"] in ("local", "gce"):
                self.query_one("#f-backend", Select).value = fields["backend"]
            else:
                self.show_error(f"unknown backend {fields['backend']!r}; use local or gce")
        for name in TEXT_FIELDS:
            if name in fields:
                self.query_one(f"#f-{name}", Input).value = fields[name]
        if "force" in fields:
            self.query_one("#f-force", Checkbox).value = True
        self.apply_stage()
        self.schedule_preview(0.05)

    def open_with(self, args: list[Any]) -> None:
        self.prefill(args[0] if args else {})

    def apply_stage(self) -> None:
        stage = self.query_one("#f-stage", Select).value
        allowed = FIELDS.get(str(stage), set())
        for name in (*TEXT_FIELDS, "backend", "force"):
            if name in ("start", "end"):
                continue
            self.query_one(f"#f-{name}").disabled = name not in allowed

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "f-stage":
            self.apply_stage()
        self.schedule_preview()

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        if event.input.id and event.input.id.startswith("f-"):
            self.schedule_preview()

    @on(Checkbox.Changed)
    def _checkbox_changed(self) -> None:
        self.schedule_preview()

    def action_leave_field(self) -> None:
        self.query_one("#f-stage", Select).focus()

    # -- preview -------------------------------------------------------------------------------------------
    def schedule_preview(self, delay: float = 0.3) -> None:
        """Plan again once typing pauses (planning reads the instrument master: a worker's job). Until then
        the shown plan is stale and launching is off, so ctrl+l never starts what the form no longer says."""
        if self._preview_timer is not None:
            self._preview_timer.stop()
        self.generation += 1
        self.preview_ok, self.request = False, None
        if self.is_mounted:
            self.refresh_bindings()
        self._preview_timer = self.set_timer(delay, self.start_preview)

    def start_preview(self) -> None:
        self.generation += 1
        generation, values = self.generation, self.values()
        self.preview_ok = False
        self.query_one("#launch-plan", Static).update(Text("planning…", style="dim"))
        self.run_worker(
            lambda: self._preview(generation, values),
            thread=True,
            group="launch-preview",
            exit_on_error=False,
        )

    def _fields(self, values: dict[str, Any]) -> tuple[str, dict[str, Any], int, str]:
        stage = str(values["stage"])
        allowed = FIELDS[stage]
        fields: dict[str, Any] = {"start": values["start"], "end": values["end"] or None}
        for name in ("venues", "types", "data_types", "symbols", "bases", "max_instruments", "timeframes"):
            if name in allowed:
                fields[name] = values[name]
        if "force" in allowed:
            fields["force"] = bool(values["force"])
        shards_text = values["shards"] or "1"
        if not shards_text.isdigit() or int(shards_text) < 1:
            raise ValueError(f"shards must be a whole number >= 1, not {shards_text!r}")
        shards = int(shards_text) if "shards" in allowed else 1
        backend = str(values["backend"]) if "backend" in allowed else "local"
        return stage, fields, shards, backend

    def _preview(self, generation: int, values: dict[str, Any]) -> None:
        result: dict[str, Any] = {}
        try:
            stage, fields, shards, backend = self._fields(values)
            request = self.backend.request(stage, fields)
            result["request"], result["shards"], result["backend"] = request, shards, backend
            result["command"] = self.backend.command_line(request, shards, backend)
            result["plan"] = self.backend.preview(request, shards)
        except Exception as exc:
            result["error"] = first_line(exc)
        try:
            self.app.call_from_thread(self._show_preview, generation, result)
        except Exception:
            pass

    def _show_preview(self, generation: int, result: dict[str, Any]) -> None:
        if generation != self.generation:
            return  # the form changed since: a newer preview is on its way
        plan_box = self.query_one("#launch-plan", Static)
        command_box = self.query_one("#launch-command", Static)
        if "command" in result:
            text = Text("equivalent command:\n", style="dim")
            text.append("$ " + result["command"], style="bold")
            command_box.update(text)
        if "error" in result:
            self.request = None
            plan_box.update(Text("✗ " + result["error"], style="bold red"))
            if "command" not in result:
                command_box.update("")
            self.refresh_bindings()
            return
        plan = result["plan"]
        self.request, self.shards, self.backend_name = result["request"], result["shards"], result["backend"]
        text = Text("plan: ", style="bold")
        if plan["units"] is None:
            text.append("planned at launch", style="yellow")
        else:
            text.append(f"{plan['units']:,} unit(s)", style="bold")
            moved = BYTES_MEANING.get(plan["operation"])
            if moved and (plan["est_bytes"] or 0) >= 1024:  # below that it is a weight or a skip, not a size
                text.append(f" · about {human_bytes(plan['est_bytes'])} {moved}")
        text.append(f" · {plan['days']} day(s)")
        if plan["operation"] != "instruments":
            text.append(f" · {plan['shards']} shard(s) on {self.backend_name}")
        if plan["note"]:
            text.append("\n" + plan["note"], style="yellow")
        plan_box.update(text)
        self.preview_ok = plan["units"] != 0
        self.refresh_bindings()

    # -- launching -----------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        allowed = super().check_action(action, parameters)
        if action == "launch" and allowed and (self.launching or not self.preview_ok):
            return None
        return allowed

    @on(Button.Pressed, "#launch-go")
    def _go(self) -> None:
        self.action_launch()

    def action_launch(self) -> None:
        if self.read_only or self.launching:
            return
        if not self.preview_ok or self.request is None:
            self.show_error("fix the form first: the plan above says what is wrong")
            return
        request, shards, backend = self.request, self.shards, self.backend_name
        if backend == "gce":
            from mdth_console.screens.modals import ConfirmScreen

            body = f"{request.operation} {request.start}..{request.end} starts {shards} Compute Engine VM(s)."
            self.app.push_screen(
                ConfirmScreen("Start VMs?", body, yes="Launch"),
                lambda yes: self._start(request, shards, backend) if yes else None,
            )
            return
        self._start(request, shards, backend)

    def _start(self, request: Any, shards: int, backend: str) -> None:
        self.launching = True
        self.query_one("#launch-status", Static).update(Text(f"starting {request.operation}…", style="cyan"))
        self.refresh_bindings()

        def work() -> None:
            try:
                result, ok = self.backend.launch(request, shards, backend), True
            except Exception as exc:
                result, ok = exc, False
            self.app.call_from_thread(self._started, result, ok)

        self.run_worker(work, thread=True, group="launch", exit_on_error=False, description="launch")

    def _started(self, result: Any, ok: bool) -> None:
        self.launching = False
        self.refresh_bindings()
        status = self.query_one("#launch-status", Static)
        if not ok:
            status.update(Text("✗ " + first_line(result), style="red"))
            self.show_error(result, title="launch failed")
            return
        if result.get("job_id"):
            status.update(Text(f"launched {result['job_id']}", style="green"))
            self.notify(
                f"launched {result['job_id']}: {result['units']} units in {result['shards']} shard(s)",
                markup=False,
            )
            self.run_worker(self.app.open_job(result["job_id"]), exit_on_error=False)  # type: ignore[attr-defined]
        else:
            status.update(Text("pipeline started: its jobs show in Jobs (2)", style="green"))
            self.notify(
                f"pipeline started: each stage shows in Jobs as it begins (log: {result['log']})",
                markup=False,
            )
