"""Injected faults, server-wide or per request path, so downloads can be tested against a misbehaving service.

A rule fires with a probability (drawn from a counter hash, so a run is reproducible) or for the first N
requests of each distinct path (then the path succeeds), which lets tests assert exact retry counts.
Spec strings: ``429,500:p=0.2,cut:first=1,slow:delay=3,truncate:path=BTCUSDT`` (bare kinds fire with p=0.1).
"""

from __future__ import annotations

import dataclasses
import re
import threading

import numpy as np

from mdth_engine.core.errors import UsageError
from mdth_engine.simulator.seeds import hash_combine, seed64, unit

# status faults answer instead of the handler; body faults damage a 200 dataset body; slow adds delay.
STATUS_KINDS = {"429": 429, "500": 500, "503": 503, "401": 401, "403": 403, "404": 404, "400iso": 400}
BODY_KINDS = ("cut", "truncate")
KINDS = (*STATUS_KINDS, *BODY_KINDS, "slow")
DEFAULT_PATH = r"^/datasets/"
DEFAULT_PROBABILITY = 0.1


@dataclasses.dataclass
class FaultRule:
    """One fault: ``kind`` on requests whose path matches ``path`` (a regex, searched)."""

    kind: str
    path: str = DEFAULT_PATH
    probability: float = 1.0
    first: int | None = None  # fire on the first N requests of each distinct path, then never
    retry_after: int = 1  # seconds, for 429 (the official client waits exactly this, plus < 1 s)
    delay: float = 2.0  # seconds, for slow (before the headers and spread over the body)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"unknown fault {self.kind!r}; known: {', '.join(KINDS)}")
        if not 0.0 <= self.probability <= 1.0:
            raise UsageError(f"fault probability {self.probability} is not in [0, 1]")
        try:
            self.regex = re.compile(self.path)
        except re.error as exc:
            raise UsageError(f"fault path {self.path!r} is not a valid regex: {exc}") from None


class Faults:
    """An ordered set of rules and the per-path counters behind ``first``; thread-safe."""

    def __init__(self, rules: list[FaultRule] | tuple[FaultRule, ...] = ()) -> None:
        self.rules = list(rules)
        self._lock = threading.Lock()
        self._seen: dict[tuple[int, str], int] = {}
        self._draws = [0] * len(self.rules)
        self.fired: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self.rules)

    @classmethod
    def parse(cls, spec: str | None) -> Faults:
        """Rules from a spec like ``429:first=2:retry_after=1,cut:p=0.05,slow:delay=1.5:path=OPTIONS``."""
        rules = []
        for part in (spec or "").split(","):
            part = part.strip()
            if not part:
                continue
            kind, *opts = part.split(":")
            kwargs: dict = {}
            for opt in opts:
                key, sep, value = opt.partition("=")
                if not sep:
                    raise UsageError(f"fault option {opt!r} in {part!r} must be key=value")
                try:
                    if key in ("p", "probability"):
                        kwargs["probability"] = float(value)
                    elif key == "first":
                        kwargs["first"] = int(value)
                    elif key == "retry_after":
                        kwargs["retry_after"] = int(value)
                    elif key == "delay":
                        kwargs["delay"] = float(value)
                    elif key == "path":
                        kwargs["path"] = value
                    else:
                        raise UsageError(
                            f"unknown fault option {key!r}; use p, first, retry_after, delay, path"
                        )
                except ValueError:
                    raise UsageError(f"fault option {opt!r} has a bad value") from None
            if "probability" not in kwargs and "first" not in kwargs:
                kwargs["probability"] = DEFAULT_PROBABILITY
            rules.append(FaultRule(kind.strip(), **kwargs))
        return cls(rules)

    def pick(self, path: str) -> list[FaultRule]:
        """The rules that fire for this request, in rule order."""
        fired = []
        with self._lock:
            for i, rule in enumerate(self.rules):
                if not rule.regex.search(path):
                    continue
                if rule.first is not None:
                    count = self._seen.get((i, path), 0) + 1
                    self._seen[(i, path)] = count
                    hit = count <= rule.first
                else:
                    self._draws[i] += 1
                    h = hash_combine(seed64("fault", i, rule.kind), np.int64(self._draws[i]))
                    hit = bool(unit(h) < rule.probability)
                if hit:
                    fired.append(rule)
                    self.fired[rule.kind] = self.fired.get(rule.kind, 0) + 1
        return fired
