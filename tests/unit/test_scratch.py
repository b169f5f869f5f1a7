"""Scratch disk and the shared model cache (issue 14, item 10): sized emptyDirs, an
ephemeral-storage request, a pod evicted for its own disk use fails the job, and a
modelCache claim mounted where the trainer reads Hub models."""

from __future__ import annotations

from typing import Any

from rlhf_operator import cache
from rlhf_operator.api import parse_manifest
from rlhf_operator.chaining import Decision
from rlhf_operator.resources import batch_job, pod_trainer_config
from rlhf_operator.settings import OperatorSettings
from rlhf_operator.status import observe, stops_its_job

from tests.invalid_manifests import minimal_manifest

SETTINGS = OperatorSettings(trainer_image="registry.example/trainer:1")
NOW = "2026-11-30T08:00:00Z"


def _job(spec: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    manifest = minimal_manifest("SFTJob", "demo")
    manifest["metadata"].update({"namespace": "team", "uid": "1", "generation": 1})
    manifest["spec"].update(spec or {})
    return parse_manifest(manifest)


def _pod_spec(job) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return batch_job(job, SETTINGS, {}, "h")["spec"]["template"]["spec"]


def test_scratch_disk_is_requested_limited_and_sizes_the_emptydirs() -> None:
    for spec, size in (({}, "20Gi"), ({"resources": {"scratchDisk": "200Gi"}}, "200Gi")):
        pod = _pod_spec(_job(spec))
        resources = pod["containers"][0]["resources"]
        assert resources["requests"]["ephemeral-storage"] == size
        assert resources["limits"]["ephemeral-storage"] == size
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["tmp"]["emptyDir"] == {"sizeLimit": size}
        assert volumes["cache"]["emptyDir"] == {"sizeLimit": size}


def test_a_model_cache_claim_is_mounted_where_the_trainer_reads_hub_models() -> None:
    job = _job({"modelCache": {"claimName": "hf-cache"}})
    pod = _pod_spec(job)
    volume = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    assert volume["persistentVolumeClaim"] == {"claimName": "hf-cache", "readOnly": True}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model-cache")
    assert mount == {"name": "model-cache", "mountPath": "/model-cache", "readOnly": True}
    paths = pod_trainer_config(job, {}, SETTINGS).paths
    assert (paths.hub_cache, paths.hub_cache_read_only, paths.cache) == (
        "/model-cache/hub",
        True,
        "/cache",
    )

    shared = _job({"modelCache": {"claimName": "hf-cache", "path": "hf", "readOnly": False}})
    pod = _pod_spec(shared)
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model-cache")
    assert mount["readOnly"] is False
    paths = pod_trainer_config(shared, {}, SETTINGS).paths
    assert (paths.hub_cache, paths.hub_cache_read_only) == ("/model-cache/hf/hub", False)


def test_without_a_model_cache_nothing_is_mounted_and_downloads_go_to_scratch() -> None:
    job = _job()
    assert all(v["name"] != "model-cache" for v in _pod_spec(job)["volumes"])
    assert pod_trainer_config(job, {}, SETTINGS).paths.hub_cache is None


def _batch_job(complete: bool = False) -> dict[str, Any]:
    conditions = [{"type": "Complete", "status": "True"}] if complete else []
    return {
        "metadata": {"name": "demo-sft", "namespace": "team", "uid": "batch-uid"},
        "spec": {"suspend": False},
        "status": {"active": 0, "failed": 1, "conditions": conditions},
    }


def _evicted(message: str, disruption: bool = False) -> dict[str, Any]:
    conditions = (
        [{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet"}]
        if disruption
        else []
    )
    return {
        "metadata": {
            "name": "demo-sft-abcde",
            "namespace": "team",
            "uid": "pod-uid",
            "creationTimestamp": "2026-11-30T07:50:00Z",
        },
        "status": {
            "phase": "Failed",
            "reason": "Evicted",
            "message": message,
            "conditions": conditions,
            "containerStatuses": [{"name": "trainer", "state": {"terminated": {"exitCode": 137}}}],
        },
    }


OWN_USE = [
    'Usage of EmptyDir volume "cache" exceeds the limit "20Gi". ',
    "Pod ephemeral local storage usage exceeds the total limit of containers 20Gi. ",
    'Container trainer exceeded its local ephemeral storage limit "20Gi". ',
]


def test_a_pod_evicted_for_its_own_disk_use_fails_the_job_naming_the_field() -> None:
    for message in OWN_USE:
        pod = cache.trim_pod(_evicted(message))  # what the operator keeps of it
        status = observe(_job(), {}, Decision("ready"), _batch_job(), [pod], None, NOW).status
        assert status["phase"] == "Failed", message
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == "ScratchDiskExceeded"
        assert "spec.resources.scratchDisk" in failed["message"]
        assert message.strip() in failed["message"]
        assert stops_its_job(status)  # its Job must not retry into the same disk


def test_an_eviction_for_node_pressure_keeps_retrying() -> None:
    message = "The node was low on resource: ephemeral-storage. Threshold quantity: 1Gi."
    pod = cache.trim_pod(_evicted(message, disruption=True))
    status = observe(_job(), {}, Decision("ready"), _batch_job(), [pod], None, NOW).status
    assert status["phase"] != "Failed"
    assert not stops_its_job(status)


def test_a_completed_job_is_not_failed_by_an_earlier_eviction() -> None:
    pod = cache.trim_pod(_evicted(OWN_USE[0]))
    status = observe(_job(), {}, Decision("ready"), _batch_job(True), [pod], None, NOW).status
    assert status["phase"] == "Succeeded"
