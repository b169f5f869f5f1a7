"""A queued job and Kueue (issue 14, item 11): the operator never writes a queued Job's
``spec.suspend``; ``runPolicy.suspend`` goes to the Workload's ``spec.active``; status
says what Kueue says. tests/cluster/test_kueue.py runs the same against the real Kueue."""

from __future__ import annotations

from typing import Any

import pytest
from rlhf_operator import kube, reconcile
from rlhf_operator.api import KINDS_BY_NAME, parse_manifest
from rlhf_operator.cache import ClusterView, trim_batch_job
from rlhf_operator.chaining import Decision
from rlhf_operator.queueing import (
    active_patch,
    job_uid_of,
    queue_message,
    trim_workload,
)
from rlhf_operator.runpolicy import job_spec_patch
from rlhf_operator.settings import OperatorSettings
from rlhf_operator.status import observe

from tests.invalid_manifests import minimal_manifest

JOB_UID = "job-uid-1"
NO_QUOTA = (
    "couldn't assign flavors to pod set main: insufficient unused quota for cpu in flavor "
    "default-flavor, 1 more needed"
)


def _manifest(suspend: bool = False, queue: str | None = "team-queue") -> dict[str, Any]:
    manifest = minimal_manifest("SFTJob", "x")
    manifest["metadata"].update({"namespace": "team-a", "uid": "x-uid", "generation": 1})
    if queue:
        manifest["spec"]["queueName"] = queue
    manifest["spec"]["runPolicy"] = {"suspend": suspend}
    return manifest


def _batch_job(suspend: bool) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "x-sft",
            "namespace": "team-a",
            "uid": JOB_UID,
            "ownerReferences": [
                {"kind": "SFTJob", "name": "x", "uid": "x-uid", "controller": True}
            ],
        },
        "spec": {"suspend": suspend, "backoffLimit": 3, "parallelism": 1},
        "status": {},
    }


def _workload(
    active: bool = True, conditions: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "Workload",
        "metadata": {
            "name": "job-x-sft-1a2b3",
            "namespace": "team-a",
            "labels": {"kueue.x-k8s.io/job-uid": JOB_UID},
            "managedFields": [{"manager": "kueue"}],
        },
        "spec": {"active": active, "queueName": "team-queue", "podSets": [{"name": "main"}]},
        "status": {
            "conditions": conditions or [],
            "admission": {"clusterQueue": "cluster-queue", "podSetAssignments": []},
        },
    }


def _condition(kind: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


# --- the pure decisions --------------------------------------------------------------------


def test_the_operator_never_writes_suspend_of_a_queued_job() -> None:
    """Kueue unsuspends a Job it admitted that someone else suspended: patching it fights."""
    for suspend in (True, False):
        job = parse_manifest(_manifest(suspend=suspend))
        for current in (True, False):
            assert "suspend" not in job_spec_patch(job, _batch_job(current), False)
    # Without a queue the operator still suspends and resumes the Job itself.
    unqueued = parse_manifest(_manifest(suspend=True, queue=None))
    assert job_spec_patch(unqueued, _batch_job(False), False)["suspend"] is True


def test_suspend_goes_to_the_workloads_active_switch() -> None:
    suspended = parse_manifest(_manifest(suspend=True))
    running = parse_manifest(_manifest(suspend=False))
    assert active_patch(suspended, _workload(active=True)) == {"spec": {"active": False}}
    assert active_patch(suspended, _workload(active=False)) is None
    assert active_patch(running, _workload(active=False)) == {"spec": {"active": True}}
    assert active_patch(running, _workload(active=True)) is None
    without_field = _workload()
    del without_field["spec"]["active"]  # Kueue's default: active
    assert active_patch(running, without_field) is None


def test_a_workload_is_trimmed_to_what_a_reconcile_reads() -> None:
    workload = _workload(
        conditions=[
            _condition("QuotaReserved", "False", "Pending", NO_QUOTA),
            _condition("PodsReady", "False", "PodsReady", "not yet"),
        ]
    )
    assert job_uid_of(workload) == JOB_UID
    assert trim_workload(workload) == {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "metadata": {"name": "job-x-sft-1a2b3", "namespace": "team-a"},
        "spec": {"active": True},
        "status": {
            "conditions": [_condition("QuotaReserved", "False", "Pending", NO_QUOTA)],
            "clusterQueue": "cluster-queue",
        },
    }
    assert job_uid_of({"metadata": {"labels": {}}}) is None


def test_the_queue_message_is_kueues() -> None:
    def message(**kwargs: Any) -> str:
        return queue_message("team-queue", trim_workload(_workload(**kwargs)))

    assert queue_message("team-queue", None) == (
        "queued in team-queue: waiting for Kueue to make its Workload"
    )
    waiting = [_condition("QuotaReserved", "False", "Pending", NO_QUOTA)]
    assert message(conditions=waiting) == f"queued in team-queue: {NO_QUOTA}"
    admitted = [
        _condition("QuotaReserved", "True", "QuotaReserved"),
        _condition("Admitted", "True", "Admitted"),
    ]
    assert message(conditions=admitted) == (
        "queued in team-queue: admitted by ClusterQueue cluster-queue, starting"
    )
    assert message(active=False) == "queued in team-queue: its Workload is deactivated"
    preempted = [_condition("Evicted", "True", "Preempted", "Preempted to accommodate a job")]
    assert message(conditions=preempted) == (
        "queued in team-queue: evicted: Preempted to accommodate a job"
    )


def test_status_of_a_waiting_queued_job_says_why() -> None:
    job = parse_manifest(_manifest())
    workload = trim_workload(
        _workload(conditions=[_condition("QuotaReserved", "False", "Pending", NO_QUOTA)])
    )
    observation = observe(job, {}, Decision("ready"), _batch_job(True), [], None, workload=workload)
    assert observation.status["phase"] == "Pending"
    assert observation.status["message"] == f"queued in team-queue: {NO_QUOTA}"
    suspended = parse_manifest(_manifest(suspend=True))
    observation = observe(suspended, {}, Decision("ready"), _batch_job(True), [], None)
    assert observation.status["phase"] == "Suspended"


# --- reconcile() with a Workload in the view ---------------------------------------------------


class FakeApi:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.job_patches: list[dict[str, Any]] = []
        self.workload_patches: list[tuple[str, str, dict[str, Any]]] = []
        self.statuses: list[dict[str, Any]] = []
        monkeypatch.setattr(kube, "create", lambda body: None)
        monkeypatch.setattr(kube, "patch_batch_job", lambda ns, name, p: self.job_patches.append(p))
        monkeypatch.setattr(
            kube,
            "patch_workload",
            lambda version, ns, name, p: self.workload_patches.append((version, name, p)),
        )
        monkeypatch.setattr(
            kube, "patch_status", lambda *args, **kwargs: self.statuses.append(args[3])
        )
        monkeypatch.setattr(kube, "post_event", lambda *args: None)
        monkeypatch.setattr(kube, "warning_events", lambda ns, uid: [])
        monkeypatch.setattr(reconcile, "_progress", lambda pods, settings: None)
        reconcile.WRITTEN.forget(("SFTJob", "team-a", "x"))

    @staticmethod
    def view(batch_job: dict[str, Any], workload: dict[str, Any] | None) -> ClusterView:
        empty: dict[Any, list[Any]] = {}
        return ClusterView(
            batch_jobs={("team-a", "x-sft"): [trim_batch_job(batch_job)]},
            pods={},
            training_jobs={kind: empty for kind in KINDS_BY_NAME},
            dependents_by_kind={kind: empty for kind in KINDS_BY_NAME},
            workloads={("team-a", JOB_UID): [trim_workload(workload)]} if workload else {},
        )


def test_suspending_a_queued_job_deactivates_its_workload(monkeypatch) -> None:
    api = FakeApi(monkeypatch)
    view = api.view(_batch_job(suspend=False), _workload(active=True))
    reconcile.reconcile(KINDS_BY_NAME["SFTJob"], _manifest(suspend=True), OperatorSettings(), view)
    assert api.workload_patches == [
        ("kueue.x-k8s.io/v1beta2", "job-x-sft-1a2b3", {"spec": {"active": False}})
    ]
    assert all("suspend" not in patch.get("spec", {}) for patch in api.job_patches)


def test_resuming_a_queued_job_activates_its_workload(monkeypatch) -> None:
    api = FakeApi(monkeypatch)
    view = api.view(_batch_job(suspend=True), _workload(active=False))
    phase = reconcile.reconcile(
        KINDS_BY_NAME["SFTJob"], _manifest(suspend=False), OperatorSettings(), view
    )
    assert api.workload_patches == [
        ("kueue.x-k8s.io/v1beta2", "job-x-sft-1a2b3", {"spec": {"active": True}})
    ]
    assert all("suspend" not in patch.get("spec", {}) for patch in api.job_patches)
    assert phase == "Pending"  # until Kueue admits it and unsuspends the Job
