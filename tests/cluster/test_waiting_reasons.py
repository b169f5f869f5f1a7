"""Why a job's pods wait, and the start deadline, with the real `rlhf operator` against the
real apiserver and Job controller. There is no kubelet or scheduler: the pods stay Pending,
and the test writes their status and Events as a scheduler and a kubelet would
(tests/node/test_waiting_reasons.py has the real ones)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from harness.waiting import wait_for

from tests.invalid_manifests import minimal_manifest

pytestmark = pytest.mark.cluster

INSUFFICIENT_CPU = "0/1 nodes are available: 1 Insufficient cpu."
MULTI_ATTACH = 'Multi-Attach error for volume "pvc-1" Volume is already used by pod(s) other-sft-x'


def _get(cluster, namespace: str, *what: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return json.loads(cluster.kubectl("get", *what, "-n", namespace, "-o", "json").stdout)


def _apply(cluster, namespace: str, body: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


def _condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition["type"] == kind:
            return condition
    return {}


def _events(cluster, namespace: str, name: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    selector = f"involvedObject.kind=SFTJob,involvedObject.name={name}"
    found = _get(cluster, namespace, "events", "--field-selector", selector)
    return list(found["items"])


def _the_pod(cluster, namespace: str, job: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    def found() -> dict[str, Any] | None:
        items = _get(cluster, namespace, "pods", "-l", f"batch.kubernetes.io/job-name={job}")
        return items["items"][0] if items["items"] else None

    pod = wait_for(found, timeout=30, what=f"a pod of Job {job}")
    assert pod is not None
    return pod


def test_status_and_events_say_why_the_pod_waits(crds_installed, namespace, operator) -> None:  # type: ignore[no-untyped-def]
    cluster = crds_installed
    _apply(cluster, namespace, minimal_manifest("SFTJob", "stuck"))
    pod = _the_pod(cluster, namespace, "stuck-sft")
    name = pod["metadata"]["name"]

    def pod_status(status: dict[str, Any]) -> None:
        cluster.kubectl(
            "patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}),
        )  # fmt: skip

    # The scheduler finds no node.
    pod_status(
        {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": INSUFFICIENT_CPU,
                }
            ]
        }
    )

    def pods_ready_says(reason: str, text: str):  # type: ignore[no-untyped-def]
        def check() -> dict[str, Any] | None:
            body = _get(cluster, namespace, "sftjob", "stuck")
            ready = _condition(body, "PodsReady")
            if ready.get("reason") == reason and text in ready.get("message", ""):
                return body
            return None

        return check

    body = wait_for(
        pods_ready_says("Unschedulable", "1 Insufficient cpu"), timeout=30, what="Unschedulable"
    )
    assert body["status"]["phase"] == "Pending"
    assert f"Unschedulable: pod {name}: {INSUFFICIENT_CPU}" in body["status"]["message"]
    wait_for(
        lambda: any(e["reason"] == "Unschedulable" for e in _events(cluster, namespace, "stuck")),
        timeout=20,
        what="an Unschedulable Event on the SFTJob",
    )

    # Scheduled, but a volume cannot be attached: only an Event on the pod says so.
    pod_status(
        {
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [
                {
                    "name": "trainer",
                    "image": pod["spec"]["containers"][0]["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                }
            ],
        }
    )
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _apply(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.attach", "namespace": namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": name,
                "namespace": namespace,
                "uid": pod["metadata"]["uid"],
            },
            "type": "Warning",
            "reason": "FailedAttachVolume",
            "message": MULTI_ATTACH,
            "source": {"component": "attachdetach-controller"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        },
    )
    # Read once the pod has been created for a while (podwait.EVENTS_AFTER_SECONDS), at the
    # next reconcile (the operator's safety-net timer: 6 s here).
    body = wait_for(
        pods_ready_says("FailedAttachVolume", "Multi-Attach error"),
        timeout=40,
        what="FailedAttachVolume from the pod's Events",
    )
    assert body["status"]["phase"] == "Pending"
    log = operator.log_text()
    assert "Traceback" not in log, log[-4000:]


def test_pods_not_started_in_time_fail_the_job_its_job_and_its_dependents(  # type: ignore[no-untyped-def]
    crds_installed, namespace, operator
) -> None:
    cluster = crds_installed
    late = minimal_manifest("SFTJob", "late")
    late["spec"]["runPolicy"] = {"startDeadlineSeconds": 10}
    downstream = minimal_manifest("RewardModelJob", "after-late")
    downstream["spec"]["model"] = {"fromJob": {"kind": "SFTJob", "name": "late"}}
    _apply(cluster, namespace, late)
    _apply(cluster, namespace, downstream)
    pod = _the_pod(cluster, namespace, "late-sft")
    started = time.monotonic()

    def failed(kind: str, name: str):  # type: ignore[no-untyped-def]
        def check() -> dict[str, Any] | None:
            body = _get(cluster, namespace, kind, name)
            return body if (body.get("status") or {}).get("phase") == "Failed" else None

        return check

    body = wait_for(failed("sftjob", "late"), timeout=40, what="the SFTJob to fail")
    assert time.monotonic() - started >= 8  # not before its deadline (less the pod's head start)
    condition = _condition(body, "Failed")
    assert condition["reason"] == "PodsNotStarted"
    assert body["status"]["message"].startswith("the training pods did not start within 10 s:")
    assert pod["metadata"]["name"] in body["status"]["message"]
    assert any(e["reason"] == "PodsNotStarted" for e in _events(cluster, namespace, "late"))

    # The Job failed for good (it can never start the pods later) and its pod is gone.
    def job_failed() -> dict[str, Any] | None:
        job = _get(cluster, namespace, "job.batch", "late-sft")
        return job if _condition(job, "Failed").get("status") == "True" else None

    job = wait_for(job_failed, timeout=30, what="the batch Job to fail")
    assert job["spec"]["activeDeadlineSeconds"] == 1
    assert _condition(job, "Failed")["reason"] == "DeadlineExceeded"
    wait_for(
        lambda: (
            not _get(cluster, namespace, "pods", "-l", "batch.kubernetes.io/job-name=late-sft")[
                "items"
            ]
        ),
        timeout=30,
        what="the pod to be deleted",
    )

    # Downstream jobs fail as for any failure, and start nothing.
    after = wait_for(failed("rewardmodeljob", "after-late"), timeout=30, what="the dependent")
    assert _condition(after, "Failed")["reason"] == "DependencyFailed"
    assert (
        cluster.kubectl(
            "get", "job.batch", "after-late-rm", "-n", namespace, check=False
        ).returncode
        != 0
    )
    # Still failed, and for the same reason, a while later.
    time.sleep(2)
    body = _get(cluster, namespace, "sftjob", "late")
    assert _condition(body, "Failed")["reason"] == "PodsNotStarted"
