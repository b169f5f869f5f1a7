"""The operator's watch-backed views: what is kept, and what a reconcile reads from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from rlhf_operator import cache
from rlhf_operator.api import KINDS_BY_NAME, parse_manifest
from rlhf_operator.chaining import Decision
from rlhf_operator.status import observe

from tests.invalid_manifests import minimal_manifest

ROOT = Path(__file__).resolve().parents[2]

MANAGED_FIELDS = [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:" + "x" * 50: {}}}}] * 20


def _batch_job() -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "demo-sft",
            "namespace": "team",
            "uid": "u1",
            "labels": {"app.kubernetes.io/managed-by": "rlhf-operator"},
            "managedFields": MANAGED_FIELDS,
        },
        "spec": {
            "suspend": False,
            "activeDeadlineSeconds": 600,
            "template": {"spec": {"containers": [{"name": "trainer", "image": "x"}]}},
        },
        "status": {
            "startTime": "2026-11-29T10:00:00Z",
            "active": 1,
            "conditions": [{"type": "Complete", "status": "True"}],
        },
    }


def _pod(phase: str, message: str | None = None, index: str = "0") -> dict[str, Any]:
    state: dict[str, Any] = {"running": {"startedAt": "2026-11-29T10:00:01Z"}}
    if message is not None:
        state = {"terminated": {"exitCode": 0, "message": message}}
    return {
        "metadata": {
            "name": f"demo-sft-{index}-abcde",
            "namespace": "team",
            "creationTimestamp": "2026-11-29T10:00:00Z",
            "annotations": {
                "batch.kubernetes.io/job-completion-index": index,
                "other": "y" * 1000,
            },
            "labels": {"batch.kubernetes.io/job-name": "demo-sft"},
            "managedFields": MANAGED_FIELDS,
        },
        "spec": {"containers": [{"name": "trainer", "env": [{"name": "A", "value": "b"}] * 50}]},
        "status": {
            "phase": phase,
            "podIP": "10.0.0.7",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "trainer", "restartCount": 1, "state": state}],
        },
    }


def _waiting_pod(
    waiting: tuple[str, str] | None = None,
    unschedulable: str | None = None,
    index: str = "0",
    init: bool = False,
) -> dict[str, Any]:
    """A pod that has not started: not schedulable, or its container (or init container)
    waiting for a reason, with all the fields the apiserver sends."""
    body = _pod("Pending", index=index)
    body["metadata"]["uid"] = f"pod-uid-{index}"
    status = body["status"]
    status.pop("podIP")
    status["conditions"] = [
        {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-11-29T10:00:01Z"},
        {
            "type": "PodScheduled",
            "status": "False" if unschedulable else "True",
            "lastTransitionTime": "2026-11-29T10:00:01Z",
            **({"reason": "Unschedulable", "message": unschedulable} if unschedulable else {}),
        },
    ]
    if unschedulable:
        del status["containerStatuses"]
        return body
    reason, message = waiting or ("ContainerCreating", "")
    state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    container = {
        "name": "trainer",
        "image": "registry.invalid/nothing:1",
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": state,
        "lastState": {},
    }
    if init:
        status["initContainerStatuses"] = [{**container, "name": "init"}]
        container["state"] = {"waiting": {"reason": "PodInitializing"}}
    status["containerStatuses"] = [container]
    return body


def test_trimmed_objects_keep_what_observation_reads_and_drop_the_bulk() -> None:
    job = cache.trim_batch_job(_batch_job())
    assert job["spec"] == {"suspend": False, "activeDeadlineSeconds": 600}
    assert job["status"] == _batch_job()["status"]
    assert "managedFields" not in job["metadata"]

    summary = json.dumps({"phase": "Succeeded", "metrics": {"eval_loss": 0.5}})
    pod = cache.trim_pod(_pod("Succeeded", summary))
    assert pod["status"]["podIP"] == "10.0.0.7"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == summary
    assert pod["metadata"]["annotations"] == {"batch.kubernetes.io/job-completion-index": "0"}
    assert len(json.dumps(pod)) < len(json.dumps(_pod("Succeeded", summary))) / 5


def test_observation_is_the_same_from_trimmed_and_full_objects() -> None:
    """The cache must not change a single decision: observe() sees the same world."""
    manifest = minimal_manifest("SFTJob", "demo")
    manifest["metadata"].update({"namespace": "team", "uid": "1", "generation": 1})
    job = parse_manifest(manifest)
    decision = Decision("ready")
    summary = json.dumps({"phase": "Succeeded", "metrics": {"eval_loss": 0.5}, "steps": 10})
    active = {**_batch_job(), "status": {"active": 1, "startTime": "2026-11-29T10:00:00Z"}}
    mount = {"type": "Warning", "reason": "FailedMount", "message": "configmap x not found"}
    for batch, pods in [
        (_batch_job(), [_pod("Succeeded", summary)]),
        (active, [_pod("Running"), _pod("Pending", index="1")]),
        ({**_batch_job(), "spec": {"suspend": True}, "status": {}}, []),
        # Pods that wait, each for another reason (podwait.py), and a Job with no pod.
        (active, [_waiting_pod(unschedulable="0/1 nodes are available: 1 Insufficient cpu.")]),
        (active, [_waiting_pod(("ErrImagePull", 'failed to pull image "x": no such host'))]),
        (active, [_waiting_pod(("ImagePullBackOff", 'Back-off pulling image "x"'))]),
        (active, [_waiting_pod(("CreateContainerConfigError", 'secret "hub" not found'))]),
        (active, [_waiting_pod(("ImagePullBackOff", "m"), init=True)]),
        (active, [_waiting_pod(("ContainerCreating", ""))]),
        (active, [_pod("Running"), _waiting_pod(("ErrImagePull", "m"), index="1")]),
        (active, []),
    ]:
        # Before and after the start deadline; with the Warning Events reconcile reads.
        for clock in ("2026-11-29T10:00:30Z", "2026-11-29T10:20:00Z"):
            events = {"u1": [mount], "pod-uid-0": [mount]}
            full = observe(job, {}, decision, batch, pods, None, clock, events)
            trimmed = observe(
                job,
                {},
                decision,
                cache.trim_batch_job(batch),
                [cache.trim_pod(p) for p in pods],
                None,
                clock,
                events,
            )
            for stamped in (full.status, trimmed.status):
                for condition in stamped.get("conditions", []):
                    condition.pop("lastTransitionTime", None)
            assert trimmed.status == full.status
            assert trimmed.events == full.events


def test_training_jobs_lose_managed_fields_and_kubectls_copy_but_parse_the_same() -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "sftjob.yaml").read_text())
    body = {
        **manifest,
        "metadata": {
            **manifest["metadata"],
            "namespace": "team",
            "managedFields": MANAGED_FIELDS,
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": json.dumps(manifest),
                "team.example/owner": "alice",
            },
        },
        "status": {"phase": "Running"},
    }
    trimmed = cache.trim_training_job(body)
    assert "managedFields" not in trimmed["metadata"]
    assert trimmed["metadata"]["annotations"] == {"team.example/owner": "alice"}
    assert trimmed["status"] == {"phase": "Running"}
    assert parse_manifest(trimmed).spec == parse_manifest(body).spec


def _ppo(phase: str | None) -> dict[str, Any]:
    manifest = yaml.safe_load((ROOT / "examples" / "smoke" / "ppojob.yaml").read_text())
    manifest["metadata"]["namespace"] = "team"
    if phase:
        manifest["status"] = {"phase": phase}
    return manifest


def test_only_jobs_that_may_still_wait_are_filed_as_dependents() -> None:
    waiting = [("team", "SFTJob", "smoke-sft"), ("team", "RewardModelJob", "smoke-rm")]
    assert cache.upstream_keys(_ppo(None)) == waiting
    assert cache.upstream_keys(_ppo("Waiting")) == waiting
    assert cache.upstream_keys(_ppo("Running")) == []
    assert cache.upstream_keys(_ppo("Succeeded")) == []
    broken = _ppo("Waiting")
    broken["spec"]["ppo"]["miniBatches"] = "many"
    assert cache.upstream_keys(broken) == []


class _Store(dict):  # type: ignore[type-arg]
    """Kopf's index: key -> store of values (one per object filed under the key)."""

    def file(self, key: Any, value: Any) -> None:
        self.setdefault(key, []).append(value)


def test_the_view_answers_from_the_indexes() -> None:
    batch_jobs, pods, sft_jobs, ppo_dependents = _Store(), _Store(), _Store(), _Store()
    batch_jobs.file(("team", "demo-sft"), cache.trim_batch_job(_batch_job()))
    pods.file(("team", "demo-sft"), cache.trim_pod(_pod("Running")))
    pods.file(("team", "demo-sft"), cache.trim_pod(_pod("Running", index="1")))
    sft_jobs.file(("team", "smoke-sft"), {"metadata": {"name": "smoke-sft"}})
    for key in cache.upstream_keys(_ppo(None)):
        ppo_dependents.file(key, "smoke-ppo")
    view = cache.ClusterView(
        batch_jobs=batch_jobs,
        pods=pods,
        training_jobs={kind: _Store() for kind in KINDS_BY_NAME} | {"SFTJob": sft_jobs},
        dependents_by_kind={kind: _Store() for kind in KINDS_BY_NAME} | {"PPOJob": ppo_dependents},
    )
    assert view.batch_job("team", "demo-sft")["status"]["active"] == 1  # type: ignore[index]
    assert view.batch_job("team", "other-sft") is None
    assert view.batch_job("elsewhere", "demo-sft") is None
    assert len(view.pods_of("team", "demo-sft")) == 2
    assert view.pods_of("team", "other-sft") == []
    sft = KINDS_BY_NAME["SFTJob"]
    assert view.training_job(sft, "team", "smoke-sft") == {"metadata": {"name": "smoke-sft"}}
    assert view.training_job(sft, "team", "nope") is None
    assert view.dependents("team", "SFTJob", "smoke-sft") == [
        (KINDS_BY_NAME["PPOJob"], "smoke-ppo")
    ]
    assert view.dependents("team", "SFTJob", "other") == []
    # A value handed out is a copy: a reconcile changing it does not change the cache.
    view.batch_job("team", "demo-sft")["spec"] = {}  # type: ignore[index]
    assert view.batch_job("team", "demo-sft")["spec"]["activeDeadlineSeconds"] == 600  # type: ignore[index]


def test_a_waiting_pod_keeps_why_it_waits_and_a_running_one_nothing_more() -> None:
    unschedulable = cache.trim_pod(_waiting_pod(unschedulable="0/1 nodes are available"))
    assert unschedulable["metadata"]["uid"] == "pod-uid-0"
    assert unschedulable["status"]["conditions"] == [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/1 nodes are available",
        }
    ]
    pulling = cache.trim_pod(_waiting_pod(("ErrImagePull", "no such host"), init=True))
    assert pulling["status"]["initContainerStatuses"] == [
        {
            "name": "init",
            "restartCount": 0,
            "state": {"waiting": {"reason": "ErrImagePull", "message": "no such host"}},
            "image": "registry.invalid/nothing:1",
        }
    ]
    running = cache.trim_pod(_pod("Running"))
    assert running["status"]["containerStatuses"] == [
        {"name": "trainer", "restartCount": 1, "state": {}}
    ]
    assert "conditions" not in running["status"]  # only PodScheduled is kept, and it has none
    assert "initContainerStatuses" not in running["status"]
