"""Jobs sharing an output claim (issue 14, item 6): each writes in its own folder, and
whatever reads a job's output reads that folder."""

from __future__ import annotations

import json
from typing import Any

from rlhf_operator.api import parse_manifest
from rlhf_operator.chaining import Decision, decide
from rlhf_operator.inputs import upstreams
from rlhf_operator.render import rendered_configs
from rlhf_operator.resources import batch_job, child_names, pod_trainer_config
from rlhf_operator.resources.job import input_paths
from rlhf_operator.settings import OperatorSettings
from rlhf_operator.status import observe

from tests.invalid_manifests import minimal_manifest

SETTINGS = OperatorSettings(trainer_image="registry.example/trainer:1")


def _job(kind: str, name: str, spec: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    manifest = minimal_manifest(kind, name)
    manifest["metadata"].update({"namespace": "team", "uid": f"uid-{name}", "generation": 1})
    manifest["spec"].update(spec or {})
    return parse_manifest(manifest)


SHARED = {"output": {"existingClaim": "team-storage"}}


def _succeeded(job) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The status the operator writes when the job's pod ended with the trainer's summary."""
    summary = json.dumps({"phase": "Succeeded", "output": "model", "steps": 3})
    name = child_names(job).job
    batch = {
        "metadata": {"name": name, "namespace": "team", "uid": "batch-uid"},
        "spec": {"suspend": False},
        "status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1},
    }
    pod = {
        "metadata": {"name": f"{name}-0-abcde", "namespace": "team", "uid": "pod-uid"},
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "trainer", "state": {"terminated": {"exitCode": 0, "message": summary}}}
            ],
        },
    }
    return observe(job, {}, Decision("ready"), batch, [pod], None, "2026-11-30T08:00:00Z").status


def test_two_jobs_on_one_existing_claim_write_to_disjoint_folders() -> None:
    first, second = _job("SFTJob", "first", SHARED), _job("SFTJob", "second", SHARED)
    assert child_names(first).output_claim == child_names(second).output_claim == "team-storage"
    outputs = {pod_trainer_config(job, {}, SETTINGS).paths.output for job in (first, second)}
    assert outputs == {"/output/first-sft", "/output/second-sft"}
    # An SFTJob and a RewardModelJob of the same name on that claim do not meet either.
    reward = _job("RewardModelJob", "first", SHARED)
    assert pod_trainer_config(reward, {}, SETTINGS).paths.output == "/output/first-rm"
    # The claim itself is mounted at /output, where the folders live.
    pod = batch_job(first, SETTINGS, {}, "h")["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "output")
    assert mount["mountPath"] == "/output" and "subPath" not in mount


def test_a_job_on_its_own_claim_writes_in_its_folder_too() -> None:
    job = _job("SFTJob", "alone")
    assert pod_trainer_config(job, {}, SETTINGS).paths.output == "/output/alone-sft"


def test_status_output_names_the_jobs_folder() -> None:
    status = _succeeded(_job("SFTJob", "policy", SHARED))
    assert status["output"] == {"claimName": "team-storage", "path": "policy-sft/model"}


def test_a_downstream_reads_the_upstreams_folder() -> None:
    sft = _job("SFTJob", "policy", SHARED)
    reward = _job("RewardModelJob", "reward", SHARED)
    ppo = _job("PPOJob", "demo")
    found = {}
    for upstream in upstreams(ppo):
        done = sft if upstream.kind == "SFTJob" else reward
        found[upstream] = {"status": {"phase": "Succeeded", **_succeeded(done)}}
    decision = decide(ppo, found)
    assert decision.readiness == "ready"
    assert decision.input_claims == {
        "policy": ("team-storage", "policy-sft/model"),
        "rewardModel": ("team-storage", "reward-rm/model"),
    }
    assert input_paths(decision.input_claims) == {
        "policy": "/inputs/policy/policy-sft/model",
        "rewardModel": "/inputs/rewardModel/reward-rm/model",
    }


def test_rlhf_render_reads_the_upstreams_folder_as_the_operator_does() -> None:
    sft = _job("SFTJob", "policy", SHARED)
    ppo = _job("PPOJob", "demo")
    configs = rendered_configs([sft, ppo], SETTINGS)
    assert configs["policy-sft"]["paths"]["output"] == "/output/policy-sft"
    inputs = configs["demo-ppo"]["paths"]["inputs"]
    assert inputs["policy"] == "/inputs/policy/policy-sft/model"
    # An upstream not in the files: its default claim and folder.
    assert inputs["rewardModel"] == "/inputs/rewardModel/reward-rm/model"


def test_a_job_reading_from_the_claim_it_writes_mounts_it_once() -> None:
    """A downstream on the same existingClaim as its upstream: one volume of the claim,
    mounted read-write at /output and read-only at /inputs/<slot> (two volumes of one claim
    in a pod would ask the kubelet to attach it twice)."""
    ppo = _job("PPOJob", "demo", {**SHARED, "modelCache": {"claimName": "team-storage"}})
    claims = {
        "policy": ("team-storage", "policy-sft/model"),
        "rewardModel": ("reward-rm-output", "reward-rm/model"),
    }
    pod = batch_job(ppo, SETTINGS, claims, "h")["spec"]["template"]["spec"]
    claim_volumes = [
        (v["name"], v["persistentVolumeClaim"]["claimName"])
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claim_volumes == [("output", "team-storage"), ("input-0", "reward-rm-output")]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/output"]["name"] == "output" and not mounts["/output"].get("readOnly")
    assert mounts["/inputs/policy"] == {
        "name": "output",
        "mountPath": "/inputs/policy",
        "readOnly": True,
    }
    assert mounts["/model-cache"]["name"] == "output" and mounts["/model-cache"]["readOnly"]
