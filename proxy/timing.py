"""Per-request stage durations, for the access log.

A context variable holds the current request's dict; work started on its behalf (the single-flight
task of a leader) inherits the same dict, so the leader's log line shows where its time went.
"""

from __future__ import annotations

from contextvars import ContextVar

_STAGES: ContextVar[dict[str, float] | None] = ContextVar("originshield_stages", default=None)


def begin() -> dict[str, float]:
    stages: dict[str, float] = {}
    _STAGES.set(stages)
    return stages


def record(stage: str, seconds: float) -> None:
    stages = _STAGES.get()
    if stages is not None:
        stages[f"{stage}_ms"] = round(stages.get(f"{stage}_ms", 0.0) + seconds * 1000, 3)
