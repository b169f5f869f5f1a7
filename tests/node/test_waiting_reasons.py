"""Why a job's pods wait, as the real scheduler and kubelet report it: an image that cannot
be pulled (no registry is reachable from the test node, so the pull really fails), a CPU
request no node can give, and the start deadline failing such a job and its Job."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.node.test_operator_on_a_node import _smoke

pytestmark = pytest.mark.cluster

MISSING_IMAGE = "registry.invalid/nothing:1"


def _condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition["type"] == kind:
            return condition
    return {}


def _pods_ready(reasons: tuple[str, ...], text: str):  # type: ignore[no-untyped-def]
    """A predicate: PodsReady is False for one of ``reasons``, its message holding ``text``."""

    def check(body: dict[str, Any]) -> bool:
        ready = _condition(body, "PodsReady")
        return (
            ready.get("status") == "False"
            and ready.get("reason") in reasons
            and text in ready.get("message", "")
        )

    return check


def _event_reasons(pipeline, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    found = pipeline.kubectl(
        "get", "events", "-o", "json",
        "--field-selector", f"involvedObject.kind=SFTJob,involvedObject.name={name}",
    ).stdout  # fmt: skip
    return [event["reason"] for event in json.loads(found)["items"]]


def _unschedulable_sft(name: str, **run_policy: Any) -> dict[str, Any]:
    job = _smoke("sftjob")
    job["metadata"]["name"] = name
    job["spec"]["resources"]["cpu"] = "64"  # more than the test node has
    if run_policy:
        job["spec"]["runPolicy"] = {**job["spec"].get("runPolicy", {}), **run_policy}
    return job


def test_an_image_that_cannot_be_pulled_is_named_in_status_and_events(pipeline) -> None:
    job = _smoke("sftjob")
    job["metadata"]["name"] = "no-image"
    job["spec"]["image"] = MISSING_IMAGE
    job["spec"]["imagePullPolicy"] = "IfNotPresent"
    pipeline.apply(job)
    reasons = ("ErrImagePull", "ImagePullBackOff")
    body = pipeline.wait_for(
        "sftjob", "no-image", _pods_ready(reasons, MISSING_IMAGE), 60, "an image pull error"
    )
    status = body["status"]
    assert status["phase"] == "Pending"
    assert MISSING_IMAGE in status["message"]
    assert any(reason in status["message"] for reason in reasons), status["message"]
    deadline = time.monotonic() + 20
    while not set(reasons) & set(_event_reasons(pipeline, "no-image")):
        assert time.monotonic() < deadline, _event_reasons(pipeline, "no-image")
        time.sleep(0.5)
    # The kubelet alternates ErrImagePull and ImagePullBackOff (back-off 10 s, then 20 s):
    # one problem, one Event, however often it retries.
    time.sleep(15)
    seen = _event_reasons(pipeline, "no-image")
    assert sum(seen.count(reason) for reason in reasons) == 1, seen


def test_a_pod_no_node_can_hold_says_unschedulable(pipeline) -> None:
    pipeline.apply(_unschedulable_sft("too-big"))
    body = pipeline.wait_for(
        "sftjob",
        "too-big",
        _pods_ready(("Unschedulable",), "Insufficient cpu"),
        60,
        "Unschedulable with Insufficient cpu",
    )
    assert body["status"]["phase"] == "Pending"
    assert "Unschedulable" in body["status"]["message"]
    assert "Insufficient cpu" in body["status"]["message"]
    deadline = time.monotonic() + 20
    while "Unschedulable" not in _event_reasons(pipeline, "too-big"):
        assert time.monotonic() < deadline, _event_reasons(pipeline, "too-big")
        time.sleep(0.5)


def test_the_start_deadline_fails_an_unschedulable_job_and_stops_its_job(pipeline) -> None:
    pipeline.apply(_unschedulable_sft("never", startDeadlineSeconds=20))
    body = pipeline.wait_for_phase("sftjob", "never", "Failed", 60)
    failed = _condition(body, "Failed")
    assert failed["reason"] == "PodsNotStarted"
    assert body["status"]["message"].startswith("the training pods did not start within 20 s:")
    assert "Unschedulable" in failed["message"] and "Insufficient cpu" in failed["message"]
    assert "PodsNotStarted" in _event_reasons(pipeline, "never")

    # Its Job failed for good (it cannot start the pod once CPUs free up) and the pod went.
    job = pipeline.wait_for(
        "job.batch",
        "never-sft",
        lambda job: _condition(job, "Failed").get("status") == "True",
        30,
        "the batch Job to fail",
    )
    assert _condition(job, "Failed")["reason"] == "DeadlineExceeded"
    deadline = time.monotonic() + 30
    while pipeline.pods("batch.kubernetes.io/job-name=never-sft"):
        assert time.monotonic() < deadline, "the pod of the stopped Job is still there"
        time.sleep(0.5)
    assert pipeline.get("sftjob", "never")["status"]["phase"] == "Failed"
