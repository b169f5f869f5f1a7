"""A multi-node job fails and restarts as one group (issue 14 item 4), with the real
`rlhf operator`, apiserver, Job controller and garbage collector. There is no kubelet: the
test writes a rank's exit into its pod's status as a kubelet would, and the Job controller
applies the Job's podFailurePolicy, backoffLimit 0 and successPolicy to it for real
(tests/node/test_multinode.py kills a real rank)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from harness.waiting import wait_for

from tests.invalid_manifests import minimal_manifest

pytestmark = pytest.mark.cluster

INDEX = "batch.kubernetes.io/job-completion-index"


def _get(cluster, namespace: str, *what: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return json.loads(cluster.kubectl("get", *what, "-n", namespace, "-o", "json").stdout)


def _group(name: str, backoff_limit: int = 3) -> dict[str, Any]:
    manifest = minimal_manifest("SFTJob", name)
    manifest["spec"]["resources"] = {"nodes": 2, "gpusPerNode": 0}
    manifest["spec"]["output"] = {"accessModes": ["ReadWriteMany"]}
    manifest["spec"]["runPolicy"] = {"backoffLimit": backoff_limit}
    return manifest


def _condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition["type"] == kind:
            return condition
    return {}


def _pods(cluster, namespace: str, job: dict[str, Any]) -> dict[int, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The Job's pods by rank (its own: by its uid)."""
    name = job["metadata"]["name"]
    items = _get(cluster, namespace, "pods", "-l", f"batch.kubernetes.io/job-name={name}")
    return {
        int(pod["metadata"]["annotations"][INDEX]): pod
        for pod in items["items"]
        if any(r["uid"] == job["metadata"]["uid"] for r in pod["metadata"]["ownerReferences"])
        and not pod["metadata"].get("deletionTimestamp")
    }


def _running_group(cluster, namespace: str, name: str, not_uid: str = "") -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The batch Job (another than ``not_uid``) once it has its two pods."""

    def found() -> dict[str, Any] | None:
        listed = _get(cluster, namespace, "jobs.batch", "--field-selector", f"metadata.name={name}")
        for job in listed["items"]:
            if job["metadata"]["uid"] != not_uid and len(_pods(cluster, namespace, job)) == 2:
                return dict(job)
        return None

    job = wait_for(found, timeout=60, what=f"Job {name} with two pods")
    assert job is not None
    return job


def _exit(  # type: ignore[no-untyped-def]
    cluster,
    namespace: str,
    pod: dict[str, Any],
    code: int,
    disrupted: bool = False,
    message: str = "",
) -> None:
    """Write into the pod's status what a kubelet writes when its trainer exits."""
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    terminated: dict[str, Any] = {
        "exitCode": code,
        "reason": "Completed" if code == 0 else "Error",
        "startedAt": now,
        "finishedAt": now,
    }
    if message:
        terminated["message"] = message
    conditions = [{"type": "PodScheduled", "status": "True"}]
    if disrupted:
        conditions.append(
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting",
                "lastTransitionTime": now,
            }
        )
    status = {
        "phase": "Succeeded" if code == 0 else "Failed",
        "conditions": conditions,
        "containerStatuses": [
            {
                "name": "trainer",
                "image": "trainer",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": terminated},
                "lastState": {},
            }
        ],
    }
    cluster.kubectl(
        "patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip


def _job_status(cluster, namespace: str, name: str, check) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    def found() -> dict[str, Any] | None:
        body = _get(cluster, namespace, "sftjob", name)
        return body if check(body.get("status") or {}) else None

    body = wait_for(found, timeout=60, what=f"SFTJob {name}'s status")
    assert body is not None
    return body


def test_a_failing_rank_restarts_the_whole_group_once_then_a_user_error_is_final(  # type: ignore[no-untyped-def]
    crds_installed, namespace, operator
) -> None:
    cluster = crds_installed
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_group("group")))
    first = _running_group(cluster, namespace, "group-sft")
    assert first["spec"]["backoffLimit"] == 0
    assert first["spec"]["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}

    # Rank 1 crashes: the Job controller fails the Job (backoffLimit 0) and stops rank 0;
    # the operator counts one restart, deletes the Job with its pods, makes a fresh one.
    _exit(cluster, namespace, _pods(cluster, namespace, first)[1], 1)
    second = _running_group(cluster, namespace, "group-sft", not_uid=first["metadata"]["uid"])
    body = _job_status(cluster, namespace, "group", lambda s: s.get("restarts") == 1)
    status = body["status"]
    assert status["lastRestart"]["jobUid"] == first["metadata"]["uid"]
    assert (status["lastRestart"]["rank"], status["lastRestart"]["exitCode"]) == (1, 1)
    assert status["lastRestart"]["counted"] is True
    assert status.get("disruptionRestarts", 0) == 0
    events = _get(
        cluster, namespace, "events", "--field-selector",
        "involvedObject.kind=SFTJob,involvedObject.name=group",
    )["items"]  # fmt: skip
    restarted = [e for e in events if e["reason"] == "GroupRestarted"]
    assert len(restarted) == 1 and "rank 1 exited with code 1" in restarted[0]["message"]
    # The old Job and every pod of it are gone: nothing of the first attempt runs.
    assert not _get(cluster, namespace, "pods", "-l", "batch.kubernetes.io/job-name=group-sft")[
        "items"
    ] or all(
        r["uid"] == second["metadata"]["uid"]
        for pod in _get(cluster, namespace, "pods", "-l", "batch.kubernetes.io/job-name=group-sft")[
            "items"
        ]
        for r in pod["metadata"]["ownerReferences"]
    )

    # Rank 0 of the new group finds bad data (65): final, whatever restarts are left.
    summary = '{"phase": "Failed", "reason": "DataError", "message": "dataset: no rows"}'
    _exit(cluster, namespace, _pods(cluster, namespace, second)[0], 65, message=summary)
    body = _job_status(cluster, namespace, "group", lambda s: s.get("phase") == "Failed")
    assert _condition(body, "Failed")["reason"] == "DataError"
    assert body["status"]["restarts"] == 1
    job = _get(cluster, namespace, "job.batch", "group-sft")
    assert job["metadata"]["uid"] == second["metadata"]["uid"]  # not replaced
    assert _condition(job, "Failed")["reason"] == "PodFailurePolicy"


def test_a_disruption_restarts_the_group_uncounted_and_restarts_run_out(  # type: ignore[no-untyped-def]
    crds_installed, namespace, operator
) -> None:
    cluster = crds_installed
    manifest = _group("spent", backoff_limit=0)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    first = _running_group(cluster, namespace, "spent-sft")

    # Rank 0 evicted (DisruptionTarget): the group restarts, not counted (backoffLimit 0).
    _exit(cluster, namespace, _pods(cluster, namespace, first)[0], 143, disrupted=True)
    second = _running_group(cluster, namespace, "spent-sft", not_uid=first["metadata"]["uid"])
    body = _job_status(cluster, namespace, "spent", lambda s: s.get("disruptionRestarts") == 1)
    assert body["status"].get("restarts", 0) == 0
    assert body["status"]["lastRestart"]["counted"] is False

    # A crash now: no restart left.
    _exit(cluster, namespace, _pods(cluster, namespace, second)[1], 1)
    body = _job_status(cluster, namespace, "spent", lambda s: s.get("phase") == "Failed")
    failed = _condition(body, "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "rank 1 exited with code 1" in failed["message"]
    assert (
        _get(cluster, namespace, "job.batch", "spent-sft")["metadata"]["uid"]
        == (second["metadata"]["uid"])
    )


def test_rank_0_decides_success(crds_installed, namespace, operator) -> None:  # type: ignore[no-untyped-def]
    """successPolicy: rank 0 done is the group done; rank 1 is stopped, not waited for."""
    cluster = crds_installed
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_group("first")))
    job = _running_group(cluster, namespace, "first-sft")
    _exit(cluster, namespace, _pods(cluster, namespace, job)[0], 0)
    body = _job_status(cluster, namespace, "first", lambda s: s.get("phase") == "Succeeded")
    assert body["status"].get("restarts", 0) == 0
    batch = _get(cluster, namespace, "job.batch", "first-sft")
    assert _condition(batch, "SuccessCriteriaMet")["status"] == "True"
