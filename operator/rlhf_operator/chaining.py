"""Deciding whether a job can start: are the earlier jobs it reads from done?"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .api import TrainingJob
from .api.trainer_config import InputSlot
from .inputs import Upstream, inputs, upstreams

Readiness = Literal["ready", "waiting", "failed"]


@dataclass(frozen=True)
class Decision:
    """Whether to start, and if so which claim and path each stored input comes from."""

    readiness: Readiness
    reason: str = ""
    message: str = ""
    input_claims: dict[InputSlot, tuple[str, str]] = field(default_factory=dict)


def decide(job: TrainingJob, found: dict[Upstream, dict[str, Any] | None]) -> Decision:
    """``found`` holds each upstream's object as read from the apiserver (None: missing)."""
    waiting: list[str] = []
    for upstream in upstreams(job):
        body = found.get(upstream)
        label = f"{upstream.kind}/{upstream.name}"
        if body is None:
            waiting.append(f"{label} (it does not exist yet)")
            continue
        status = body.get("status") or {}
        phase = status.get("phase") or "Pending"
        if phase == "Failed":
            return Decision(
                "failed",
                "DependencyFailed",
                f"{label} failed ({_reason(status)}); fix it and re-create this job",
            )
        if phase != "Succeeded":
            percent = (status.get("progress") or {}).get("percent")
            progress = f", {percent}%" if percent is not None else ""
            waiting.append(f"{label} ({phase}{progress})")
        elif not (status.get("output") or {}).get("claimName"):
            return Decision(
                "failed", "DependencyOutputMissing", f"{label} succeeded but reports no output"
            )
    if waiting:
        missing = all("does not exist" in item for item in waiting)
        return Decision(
            "waiting",
            "DependencyNotFound" if missing else "DependencyNotReady",
            "waiting for " + ", ".join(waiting) + " to succeed",
        )
    claims: dict[InputSlot, tuple[str, str]] = {}
    for needed in inputs(job):
        if needed.claim is not None:
            claims[needed.slot] = (needed.claim, needed.path)
        elif needed.upstream is not None:
            output = found[needed.upstream]["status"]["output"]  # type: ignore[index]
            claims[needed.slot] = (output["claimName"], output.get("path") or needed.path)
    return Decision("ready", input_claims=claims)


def _reason(status: dict[str, Any]) -> str:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return f"{condition.get('reason')}: {condition.get('message', '')}".strip(": ")
    return "no reason given"
