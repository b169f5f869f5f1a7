"""Ready means healthy (issue 14, item 12): the kstatus conditions Reconciling, Stalled
and Ready of a job in each phase, as the operator writes them (observe, the refusal of an
invalid spec, a finished job's later reconciles), and what kstatus makes of them."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from rlhf_operator import cache, reconcile
from rlhf_operator.chaining import Decision
from rlhf_operator.health import health
from rlhf_operator.ownership import BEING_DELETED, OWNED_BY_ANOTHER
from rlhf_operator.status import observe

from tests.unit.test_ownership import INFO, SETTINGS, FakeApi, _manifest
from tests.unit.test_podwait import _job, batch_job, pod, stamp

SINCE = {"message": "", "lastTransitionTime": "2026-11-29T10:00:00Z"}
FAILED_JOB = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]


def _states(status: dict[str, Any]) -> dict[str, str]:
    found = {c["type"]: c["status"] for c in status["conditions"]}
    return {kind: found[kind] for kind in ("Reconciling", "Stalled", "Ready")}


def kstatus(status: dict[str, Any], generation: int = 1) -> str:
    """kstatus's reading of a custom resource (cli-utils pkg/kstatus/status,
    checkGenericProperties): a stale observedGeneration or Reconciling True is
    InProgress, Stalled True is Failed; else Current."""
    if status.get("observedGeneration") != generation:
        return "InProgress"
    found = {c["type"]: c["status"] for c in status["conditions"]}
    if found.get("Reconciling") == "True":
        return "InProgress"
    if found.get("Stalled") == "True":
        return "Failed"
    return "Current"


T, F = "True", "False"
PHASES = [
    # (what the cluster shows, phase, (Reconciling, Stalled, Ready), kstatus)
    ("no Job yet", Decision("ready"), None, [], "Pending", (T, F, F), "InProgress"),
    (
        "waiting for an upstream",
        Decision("waiting", "DependencyNotReady", "waiting for SFTJob/a (Running) to succeed"),
        None,
        [],
        "Waiting",
        (T, F, F),
        "InProgress",
    ),
    (
        "a leftover child being deleted",
        Decision("waiting", BEING_DELETED, "ConfigMap x (being deleted)"),
        None,
        [],
        "Waiting",
        (T, F, F),
        "InProgress",
    ),
    (
        "a child owned by someone else",
        Decision("waiting", OWNED_BY_ANOTHER, "Job x belongs to Deployment y"),
        None,
        [],
        "Waiting",
        (F, T, F),
        "Failed",
    ),
    ("pods pending", Decision("ready"), batch_job(), [pod()], "Pending", (T, F, F), "InProgress"),
    (
        "training",
        Decision("ready"),
        batch_job(),
        [pod("Running")],
        "Running",
        (T, F, F),
        "InProgress",
    ),
    (
        "queued by Kueue",
        Decision("ready"),
        batch_job(suspend=True),
        [],
        "Pending",
        (T, F, F),
        "InProgress",
    ),
    (
        "succeeded",
        Decision("ready"),
        batch_job(conditions=[{"type": "Complete", "status": "True"}]),
        [],
        "Succeeded",
        (F, F, T),
        "Current",
    ),
    (
        "failed",
        Decision("ready"),
        batch_job(conditions=FAILED_JOB),
        [],
        "Failed",
        (F, T, F),
        "Failed",
    ),
    (
        "an upstream failed",
        Decision("failed", "DependencyFailed", "SFTJob/a failed"),
        None,
        [],
        "Failed",
        (F, T, F),
        "Failed",
    ),
]


@pytest.mark.parametrize(
    ("decision", "found_job", "pods", "phase", "expected", "verdict"),
    [case[1:] for case in PHASES],
    ids=[case[0] for case in PHASES],
)
def test_conditions_per_phase(decision, found_job, pods, phase, expected, verdict) -> None:  # type: ignore[no-untyped-def]
    status = observe(
        _job(), {}, decision, found_job, [cache.trim_pod(p) for p in pods], None, stamp(1)
    ).status
    assert status["phase"] == phase
    assert _states(status) == dict(zip(("Reconciling", "Stalled", "Ready"), expected, strict=True))
    assert kstatus(status) == verdict


def test_a_suspended_job_is_neither_progressing_nor_stalled_nor_ready() -> None:
    status = observe(
        _job(suspend=True), {}, Decision("ready"), batch_job(suspend=True), [], None, stamp(1)
    ).status
    assert status["phase"] == "Suspended"
    assert _states(status) == {"Reconciling": F, "Stalled": F, "Ready": F}
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "SuspendedByUser"


def test_ready_is_true_only_once_the_model_is_trained() -> None:
    """The old meaning (children created) is gone: a created Job, running pods and a
    running trainer are progress; only Succeeded is Ready."""
    job = _job()
    previous: dict[str, Any] = {}
    for found, pods in [
        (batch_job(), [pod()]),
        (batch_job(), [pod("Running")]),
        (batch_job(conditions=[{"type": "Complete", "status": "True"}]), []),
    ]:
        status = observe(job, previous, Decision("ready"), found, pods, None, stamp(2)).status
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == ("True" if status["phase"] == "Succeeded" else "False")
        assert ready["observedGeneration"] == 1
        previous = status
    assert previous["phase"] == "Succeeded"
    ready = next(c for c in previous["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], ready["message"]) == ("TrainingSucceeded", "training finished")


def test_messages_go_on_the_condition_that_holds() -> None:
    stalled, running = (
        health("Failed", "DataError", "row 3: no text"),
        health("Running", "TrainerRunning", "training (1 pod(s) running)"),
    )
    assert [(h.kind, h.state, h.message) for h in stalled] == [
        ("Reconciling", False, ""),
        ("Stalled", True, "row 3: no text"),
        ("Ready", False, "row 3: no text"),
    ]
    assert [(h.kind, h.state, h.reason) for h in running] == [
        ("Reconciling", True, "TrainerRunning"),
        ("Stalled", False, "TrainerRunning"),
        ("Ready", False, "TrainerRunning"),
    ]


def test_an_invalid_spec_is_stalled(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    api = FakeApi(monkeypatch)
    bad = _manifest({"training": {"learningRate": "fast"}})
    assert reconcile.reconcile(INFO, bad, SETTINGS, api.view()) == "Failed"
    status = api.statuses[-1]
    assert _states(status) == {"Reconciling": F, "Stalled": T, "Ready": F}
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "InvalidSpec" and "learningRate" in stalled["message"]


def test_a_job_finished_before_these_conditions_gets_them_once(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Succeeded under an older operator: Ready meant "children created"; the next
    reconcile says it the new way, and the one after writes nothing."""
    api = FakeApi(monkeypatch)
    old = _manifest()
    old["status"] = {
        "phase": "Succeeded",
        "observedGeneration": 1,
        "message": "training finished",
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "ChildrenCreated", **SINCE},
            {"type": "Succeeded", "status": "True", "reason": "TrainingSucceeded", **SINCE},
        ],
    }
    assert reconcile.reconcile(INFO, copy.deepcopy(old), SETTINGS, api.view()) == "Succeeded"
    written = api.statuses[-1]
    assert _states(written) == {"Reconciling": F, "Stalled": F, "Ready": T}
    assert kstatus(written) == "Current"
    again = {**old, "status": written}
    writes = len(api.statuses)
    assert reconcile.reconcile(INFO, again, SETTINGS, api.view()) == "Succeeded"
    assert len(api.statuses) == writes
