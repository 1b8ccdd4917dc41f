"""Cancel, retry and clean up a job from any screen: confirm first (naming the job), run in a worker, report."""

from __future__ import annotations

from typing import Any

from textual.screen import Screen

from mdth_console.format import first_line
from mdth_console.screens.modals import ConfirmScreen


def _run(screen: Screen, name: str, fn: Any, done: Any) -> None:
    """``fn`` in a thread; ``done(result)`` or an error toast on the UI thread."""
    app = screen.app

    def work() -> None:
        try:
            result, ok = fn(), True
        except Exception as exc:
            result, ok = exc, False
        app.call_from_thread(lambda: done(result) if ok else _error(app, name, result))

    screen.run_worker(work, thread=True, group=f"job-action-{name}", exit_on_error=False, description=name)


def _error(app: Any, what: str, exc: BaseException) -> None:
    app.notify(first_line(exc), title=f"{what} failed", severity="error", markup=False, timeout=10)


def with_status(screen: Screen, job_id: str, then: Any) -> None:
    """Fetch the job's status (in a worker), then call ``then(status)`` on the UI thread."""
    _run(screen, "job lookup", lambda: screen.app.backend.job(job_id), then)  # type: ignore[attr-defined]


def _where(status: Any) -> str:
    """Where the job's unfinished shards run: VM names or local pids."""
    places = []
    for shard in status.shards:
        if shard.final or shard.state == "pending":
            continue
        if shard.vm:
            places.append(f"VM {shard.vm}")
        elif shard.pid:
            places.append(f"pid {shard.pid}@{shard.host}")
    return ", ".join(places[:6]) + (f" and {len(places) - 6} more" if len(places) > 6 else "")


def cancel(screen: Screen, status: Any) -> None:
    spec = status.spec
    running = sum(1 for s in status.shards if not s.final)
    where = _where(status)
    body = (
        f"{spec.operation} {spec.request.get('start')}..{spec.request.get('end')}: {spec.shards} shard(s) on "
        f"{spec.backend}, {running} not finished{f' ({where})' if where else ''}.\n"
        "Workers stop within seconds wherever they run; finished units are kept and a retry resumes."
    )

    def answered(yes: bool | None) -> None:
        if not yes:
            return
        screen.notify(f"cancelling {spec.job_id}…", markup=False)
        _run(
            screen,
            "cancel",
            lambda: screen.app.backend.cancel(spec.job_id),  # type: ignore[attr-defined]
            lambda shards: screen.notify(
                f"{spec.job_id}: cancelled; shards stopped: {', '.join(map(str, shards)) or 'none were running'}",
                markup=False,
            ),
        )

    screen.app.push_screen(ConfirmScreen(f"Cancel job {spec.job_id}?", body, yes="Cancel job"), answered)


def cleanup(screen: Screen, status: Any) -> None:
    spec = status.spec
    where = _where(status)
    body = (
        f"{spec.operation} on {spec.backend}, {spec.shards} shard(s). Deletes the job's leftover VMs and stops its "
        f"processes on this machine{f' ({where})' if where else ''}; unfinished shards are marked dead "
        "(records and the lake's data are kept)."
    )

    def answered(yes: bool | None) -> None:
        if not yes:
            return
        _run(
            screen,
            "cleanup",
            lambda: screen.app.backend.cleanup(spec.job_id),  # type: ignore[attr-defined]
            lambda result: screen.notify(
                f"{spec.job_id}: stopped {len(result['stopped'])}, marked dead: "
                f"{', '.join(map(str, result['marked_dead'])) or '-'}",
                markup=False,
            ),
        )

    screen.app.push_screen(ConfirmScreen(f"Clean up job {spec.job_id}?", body, yes="Clean up"), answered)


def retry(screen: Screen, job_id: str, shards: list[int] | None = None) -> None:
    what = f"shard {shards[0]}" if shards and len(shards) == 1 else "failed shards"
    screen.notify(f"{job_id}: relaunching {what}…", markup=False)
    _run(
        screen,
        "retry",
        lambda: screen.app.backend.retry(job_id, shards),  # type: ignore[attr-defined]
        lambda relaunched: screen.notify(
            f"{job_id}: relaunched shard(s) {', '.join(map(str, relaunched))}"
            if relaunched
            else f"{job_id}: nothing to retry",
            markup=False,
        ),
    )
