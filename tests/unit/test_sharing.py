"""Claims a multi-node job mounts from several nodes (issue 14, item 7): refused before
anything starts when they are ReadWriteOnce, naming the claim, its origin and the fix."""

from __future__ import annotations

from typing import Any

import pytest
from rlhf_operator import reconcile
from rlhf_operator.api import parse_manifest
from rlhf_operator.chaining import Decision
from rlhf_operator.podwait import why_pods_wait
from rlhf_operator.sharing import claim_problem, claims_to_read
from rlhf_operator.status import observe

from tests.invalid_manifests import minimal_manifest

TWO_NODES = {"resources": {"nodes": 2, "gpusPerNode": 0}}
SHARED_OUTPUT = {"output": {"accessModes": ["ReadWriteMany"]}}


def _job(kind: str = "PPOJob", spec: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    manifest = minimal_manifest(kind, "demo")
    manifest["metadata"].update({"namespace": "team", "uid": "1", "generation": 1})
    manifest["spec"].update({**TWO_NODES, **SHARED_OUTPUT, **(spec or {})})
    return parse_manifest(manifest)


def _claim(*modes: str, bound: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"spec": {"accessModes": list(modes)}}
    if bound:
        body["status"] = {"phase": "Bound", "accessModes": list(modes)}
    return body


UPSTREAM_CLAIMS = {
    "policy": ("policy-sft-output", "policy-sft/model"),
    "rewardModel": ("reward-rm-output", "reward-rm/model"),
}


def test_a_multi_node_job_reading_a_read_write_once_upstream_output_fails() -> None:
    job = _job()
    assert claims_to_read(job, UPSTREAM_CLAIMS) == ["policy-sft-output", "reward-rm-output"]
    found = {
        "policy-sft-output": _claim("ReadWriteOnce"),
        "reward-rm-output": _claim("ReadWriteMany"),
    }
    problem = claim_problem(job, UPSTREAM_CLAIMS, found)
    assert problem is not None and problem.readiness == "failed"
    assert problem.reason == "ClaimNotShared"
    message = problem.message
    assert "claim policy-sft-output" in message and "SFTJob/policy" in message
    assert "is ReadWriteOnce" in message and "Multi-Attach" in message
    assert "spec.output.accessModes: [ReadWriteMany]" in message
    assert "spec.resources.nodes: 1" in message

    found["policy-sft-output"] = _claim("ReadOnlyMany", "ReadWriteOnce")
    assert claim_problem(job, UPSTREAM_CLAIMS, found) is None


def test_a_users_claim_an_existing_output_and_a_model_cache_are_checked_too() -> None:
    data = {"dataset": ("datasets", "prefs.jsonl")}
    sft = _job("SFTJob", {"output": {"existingClaim": "team-storage"}})
    read_only = _claim("ReadOnlyMany")
    # The output is written by every node: ReadOnlyMany is not enough.
    problem = claim_problem(sft, data, {"team-storage": read_only, "datasets": read_only})
    assert problem is not None and "claim team-storage, its output" in problem.message
    writable = _claim("ReadWriteMany")
    assert claim_problem(sft, data, {"team-storage": writable, "datasets": read_only}) is None
    problem = claim_problem(
        sft, data, {"team-storage": writable, "datasets": _claim("ReadWriteOnce", bound=False)}
    )
    assert problem is not None and "input dataset (spec.dataset.pvc)" in problem.message

    cached = _job("SFTJob", {"modelCache": {"claimName": "hf", "readOnly": False}})
    assert claims_to_read(cached, {}) == ["hf"]
    problem = claim_problem(cached, {}, {"hf": read_only})
    assert problem is not None and "the model cache (spec.modelCache)" in problem.message


def test_single_node_jobs_and_missing_claims_are_left_alone() -> None:
    manifest = minimal_manifest("PPOJob", "demo")
    manifest["metadata"].update({"namespace": "team", "uid": "1"})
    single = parse_manifest(manifest)
    assert claims_to_read(single, UPSTREAM_CLAIMS) == []
    found = {"policy-sft-output": _claim("ReadWriteOnce")}
    assert claim_problem(single, UPSTREAM_CLAIMS, found) is None
    assert claim_problem(_job(), UPSTREAM_CLAIMS, {}) is None  # not there: FailedMount says so


def test_reconcile_fails_the_job_before_creating_anything(monkeypatch) -> None:
    job = _job()
    read: list[tuple[str, str, str]] = []

    def get(kind: str, namespace: str, name: str) -> dict[str, Any]:
        read.append((kind, namespace, name))
        return _claim("ReadWriteOnce")

    monkeypatch.setattr(reconcile.kube, "get", get)
    decision = reconcile._shared_claims_checked(
        job, Decision("ready", input_claims=UPSTREAM_CLAIMS)
    )
    assert read == [
        ("PersistentVolumeClaim", "team", "policy-sft-output"),
        ("PersistentVolumeClaim", "team", "reward-rm-output"),
    ]
    observation = observe(job, {}, decision, None, [], None, "2026-11-30T08:00:00Z")
    assert observation.status["phase"] == "Failed"
    failed = next(c for c in observation.status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "ClaimNotShared"
    assert observation.events[0][:2] == ("Warning", "ClaimNotShared")


@pytest.mark.parametrize(
    "message", ['Multi-Attach error for volume "pvc-1" Volume is already used by pod(s) x']
)
def test_a_multi_attach_error_says_what_to_change(message: str) -> None:
    pod = {
        "metadata": {"name": "demo-ppo-0-x", "uid": "p"},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [
                {"name": "trainer", "state": {"waiting": {"reason": "ContainerCreating"}}}
            ],
        },
    }
    events = {"p": [{"type": "Warning", "reason": "FailedAttachVolume", "message": message}]}
    wait = why_pods_wait({"metadata": {"uid": "j"}, "spec": {}}, [pod], events)
    assert wait is not None and wait.reason == "FailedAttachVolume"
    assert message in wait.message and "ReadOnlyMany or ReadWriteMany" in wait.message
