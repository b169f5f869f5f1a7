"""Queued jobs against the real Kueue controller manager (issue 14, item 11).

Kueue v0.17 (hack/build-kueue.sh, tests/harness/kueue.py) runs against the apiserver-only
cluster with a ClusterQueue whose quota fits one job. There is no kubelet: admission is
Kueue unsuspending the Job (its pods then stay Pending), eviction is Kueue suspending it.
The operator must leave the Job's ``suspend`` to Kueue, suspend and resume a queued job
through its Workload's ``spec.active``, and say in status why a job waits.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from harness.kueue import Kueue, missing_kueue, queue_objects
from harness.waiting import wait_for

from tests.invalid_manifests import minimal_manifest

pytestmark = pytest.mark.cluster

ONE_JOB = {"cpu": "1", "memory": "1Gi", "scratchDisk": "2Gi"}
"""Each job's requests."""
QUOTA = {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "2Gi"}
"""The ClusterQueue's whole quota: one job. It must cover every resource the pods request,
scratch disk included (ephemeral-storage): Kueue admits no workload that requests a
resource its ClusterQueue does not cover."""


@pytest.fixture(scope="module")
def kueue(crds_installed):  # type: ignore[no-untyped-def]
    missing = missing_kueue()
    if missing:
        message = f"Kueue missing: {', '.join(missing)}; build it with bash hack/build-kueue.sh"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with Kueue(crds_installed) as manager:
        yield manager


@pytest.fixture
def queue(kueue, namespace):  # type: ignore[no-untyped-def]
    """A ClusterQueue with quota for one job, and LocalQueue `team-queue` on it."""
    cluster = kueue.cluster
    cluster_queue = f"cq-{namespace}"
    objects = queue_objects(namespace, "team-queue", cluster_queue, QUOTA)
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    )
    yield cluster_queue
    for kind in ("clusterqueue", "resourceflavor"):
        cluster.kubectl("delete", kind, cluster_queue, "--wait=false", check=False)


def _manifest(name: str, suspend: bool = False) -> dict[str, Any]:
    manifest = minimal_manifest("SFTJob", name)
    manifest["spec"].update(
        {
            "queueName": "team-queue",
            "resources": {**ONE_JOB, "gpusPerNode": 0},
            "runPolicy": {"suspend": suspend},
        }
    )
    return manifest


def _get(cluster, namespace: str, *what: str) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    found = cluster.kubectl("get", *what, "-n", namespace, "-o", "json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


def _apply(cluster, namespace: str, body: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


def _suspended(cluster, namespace: str, job: str) -> bool | None:  # type: ignore[no-untyped-def]
    """The Job's spec.suspend; None before the Job exists."""
    found = _get(cluster, namespace, "job", job)
    return None if found is None else bool(found["spec"].get("suspend"))


def _suspend_written_by(cluster, namespace: str, job: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The field managers that own the Job's spec.suspend (the last to write it)."""
    found = _get(cluster, namespace, "job", job, "--show-managed-fields") or {}
    return [
        entry["manager"]
        for entry in found["metadata"].get("managedFields") or []
        if "f:suspend" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})
    ]


def _times_started_by_kueue(cluster, namespace: str, job: str) -> int:  # type: ignore[no-untyped-def]
    """How often Kueue unsuspended the Job (its `Started` Events, counted)."""
    selector = f"involvedObject.kind=Job,involvedObject.name={job},reason=Started"
    found = _get(cluster, namespace, "events", "--field-selector", selector) or {}
    return sum(
        int(event.get("count") or (event.get("series") or {}).get("count") or 1)
        for event in found.get("items") or []
    )


def _status(cluster, namespace: str, name: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    found = _get(cluster, namespace, "sftjob", name) or {}
    return dict(found.get("status") or {})


def _waits_for_quota(cluster, namespace: str, name: str) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    status = _status(cluster, namespace, name)
    message = status.get("message", "")
    waiting = status.get("phase") == "Pending" and "insufficient unused quota" in message
    return status if waiting else None


def test_kueue_admits_suspends_and_resumes_queued_jobs(kueue, queue, namespace, operator) -> None:  # type: ignore[no-untyped-def]
    cluster = kueue.cluster

    # A fits the quota: Kueue admits it and unsuspends its Job (the operator made it
    # suspended); with no kubelet its pod stays Pending.
    _apply(cluster, namespace, _manifest("job-a"))
    wait_for(
        lambda: _suspended(cluster, namespace, "job-a-sft") is False,
        timeout=60,
        what="Kueue to admit job-a and unsuspend its Job",
    )

    # B does not fit: its Job stays suspended and its status says why, in Kueue's words.
    _apply(cluster, namespace, _manifest("job-b"))
    status = wait_for(
        lambda: _waits_for_quota(cluster, namespace, "job-b"),
        timeout=60,
        what="job-b's status to say it waits for quota",
    )
    assert status["message"].startswith("queued in team-queue: couldn't assign flavors")
    assert _suspended(cluster, namespace, "job-b-sft") is True

    # Suspending A goes through Kueue: its Workload is deactivated, Kueue suspends A's Job
    # and admits B into the quota A held. (Patching A's Job instead, Kueue unsuspends it
    # again: the Workload is still admitted; B never runs.)
    _apply(cluster, namespace, _manifest("job-a", suspend=True))
    wait_for(
        lambda: _suspended(cluster, namespace, "job-b-sft") is False,
        timeout=60,
        what="Kueue to admit job-b once job-a is suspended",
    )
    assert _suspended(cluster, namespace, "job-a-sft") is True
    # Kueue suspended it: the operator never wrote the Job's suspend after creating it.
    writers = _suspend_written_by(cluster, namespace, "job-a-sft")
    assert len(writers) == 1 and "kueue" in writers[0], writers
    # ... and Kueue started it once: it never had to undo a suspension written by another.
    assert _times_started_by_kueue(cluster, namespace, "job-a-sft") == 1
    wait_for(
        lambda: _status(cluster, namespace, "job-a").get("phase") == "Suspended",
        timeout=30,
        what="job-a to show Suspended",
    )

    # Resuming A: queued again, it waits for the quota B now holds, and says so ...
    _apply(cluster, namespace, _manifest("job-a", suspend=False))
    wait_for(
        lambda: _waits_for_quota(cluster, namespace, "job-a"),
        timeout=60,
        what="job-a, resumed, to wait for quota",
    )
    assert _suspended(cluster, namespace, "job-a-sft") is True
    assert _suspended(cluster, namespace, "job-b-sft") is False

    # ... and runs once B is gone.
    cluster.kubectl("delete", "sftjob", "job-b", "-n", namespace, "--wait=false")
    wait_for(
        lambda: _suspended(cluster, namespace, "job-a-sft") is False,
        timeout=60,
        what="Kueue to admit job-a again once job-b is deleted",
    )
    status = wait_for(
        lambda: (
            (s := _status(cluster, namespace, "job-a")).get("phase") == "Pending"
            and "queued" not in s.get("message", "")
            and s
        ),
        timeout=30,
        what="job-a's status to leave the queue",
    )
    assert "waiting for the training pods to start" in status["message"]


def test_a_job_created_suspended_holds_no_quota(kueue, queue, namespace, operator) -> None:  # type: ignore[no-untyped-def]
    """runPolicy.suspend at creation: the operator deactivates the Workload as soon as Kueue
    makes it; the Job stays suspended and holds no quota, so the next job is admitted."""
    cluster = kueue.cluster
    _apply(cluster, namespace, _manifest("held", suspend=True))

    def workload() -> dict[str, Any] | None:
        found = _get(cluster, namespace, "workloads.kueue.x-k8s.io")
        items = (found or {}).get("items") or []
        return items[0] if items else None

    held = wait_for(
        lambda: (w := workload()) and w["spec"].get("active") is False and w,
        timeout=60,
        what="the Workload of the suspended job to be deactivated",
    )
    assert held["metadata"]["ownerReferences"][0]["name"] == "held-sft"
    _apply(cluster, namespace, _manifest("next"))
    wait_for(
        lambda: _suspended(cluster, namespace, "next-sft") is False,
        timeout=60,
        what="Kueue to admit the next job",
    )
    assert _suspended(cluster, namespace, "held-sft") is True
    assert _status(cluster, namespace, "held").get("phase") == "Suspended"
