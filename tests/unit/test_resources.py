"""Rendering a job into Kubernetes objects: pure, deterministic, hardened."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from rlhf_operator.api import parse_manifest
from rlhf_operator.api.trainer_config import TrainerConfig
from rlhf_operator.inputs import inputs, trainer_config, upstreams
from rlhf_operator.resources import (
    batch_job,
    child_names,
    config_map,
    headless_service,
    output_claim,
)
from rlhf_operator.resources.job import input_paths
from rlhf_operator.settings import OperatorSettings

from tests.invalid_manifests import minimal_manifest

SETTINGS = OperatorSettings(trainer_image="registry.example/trainer:1", storage_class="fast")


def _job(kind: str, spec: dict | None = None, name: str = "demo"):  # type: ignore[no-untyped-def]
    manifest = minimal_manifest(kind, name)
    manifest["metadata"].update({"namespace": "team", "uid": "1234"})
    manifest["spec"].update(spec or {})
    return parse_manifest(manifest)


PPO_CLAIMS = {
    "policy": ("policy-sft-output", "model"),
    "rewardModel": ("reward-rm-output", "model"),
}


def test_names_are_deterministic_and_kind_specific() -> None:
    names = child_names(_job("PPOJob"))
    assert (names.job, names.config_map, names.output_claim, names.service) == (
        "demo-ppo",
        "demo-ppo-config",
        "demo-ppo-output",
        "demo-ppo",
    )
    assert child_names(_job("SFTJob")).job == "demo-sft"
    longest = _job("PPOJob", name="a" * 52)
    assert len(child_names(longest).output_claim) <= 63


def test_rendering_is_deterministic() -> None:
    job = _job("PPOJob")
    assert batch_job(job, SETTINGS, PPO_CLAIMS, "h") == batch_job(job, SETTINGS, PPO_CLAIMS, "h")


def test_ppo_inputs_come_from_upstream_outputs_mounted_read_only() -> None:
    job = _job("PPOJob")
    assert [(u.kind, u.name) for u in upstreams(job)] == [
        ("SFTJob", "policy"),
        ("RewardModelJob", "reward"),
    ]
    assert [i.slot for i in inputs(job)] == ["policy", "rewardModel"]
    rendered = batch_job(job, SETTINGS, PPO_CLAIMS, "h")
    pod = rendered["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/inputs/policy"]["readOnly"] and mounts["/inputs/rewardModel"]["readOnly"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims["policy-sft-output"]["readOnly"] is True
    assert claims["demo-ppo-output"].get("readOnly") is None
    assert input_paths(PPO_CLAIMS) == {
        "policy": "/inputs/policy/model",
        "rewardModel": "/inputs/rewardModel/model",
    }


def test_pod_is_hardened_and_argv_is_a_list() -> None:
    job = _job("SFTJob", {"env": [{"name": "X", "value": "$(rm -rf /); `id`"}]})
    rendered = batch_job(job, SETTINGS, {}, "h")
    pod = rendered["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "rlhf_trainer"]
    assert container["args"] == ["sft", "--config", "/etc/rlhf/config.json"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/output", "/tmp", "/cache", "/dev/shm"}
    # A user's value is a value: it only ever reaches the process environment.
    assert {"name": "X", "value": "$(rm -rf /); `id`"} in container["env"]
    assert container["image"] == "registry.example/trainer:1"


def test_failure_policy_fails_fast_on_user_errors_and_ignores_disruptions() -> None:
    spec = batch_job(
        _job(
            "SFTJob",
            {
                "runPolicy": {
                    "backoffLimit": 5,
                    "activeDeadlineSeconds": 600,
                    "ttlSecondsAfterFinished": 60,
                }
            },
        ),
        SETTINGS,
        {},
        "h",
    )["spec"]
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [65, 78]},
    }
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (5, 600)
    # The TTL is put on the Job only once the outcome is recorded (tests/unit/test_runpolicy.py).
    assert "ttlSecondsAfterFinished" not in spec


def rendered_grace(pod: dict) -> int:
    return int(pod["terminationGracePeriodSeconds"])


def test_gpus_resources_and_placement() -> None:
    job = _job(
        "SFTJob",
        {
            "resources": {
                "gpusPerNode": 4,
                "cpu": "16",
                "memory": "128Gi",
                "gpuResourceName": "amd.com/gpu",
                "nodeSelector": {"pool": "a100"},
                "priorityClassName": "training",
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            }
        },
    )
    pod = batch_job(job, SETTINGS, {}, "h")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {
        "cpu": "16",
        "memory": "128Gi",
        "amd.com/gpu": "4",
        "ephemeral-storage": "20Gi",
    }
    assert container["command"] == [
        "python",
        "-m",
        "rlhf_trainer.launch",  # torchrun keeping the trainer's exit code and grace period
        "--nproc_per_node=4",
        "--shutdown-timeout=110",  # the pod's 120 s grace period less a margin
        "--standalone",
        "-m",
        "rlhf_trainer",
    ]
    assert rendered_grace(pod) == 120
    assert pod["nodeSelector"] == {"pool": "a100"} and pod["priorityClassName"] == "training"
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    default_gpu = batch_job(
        _job("SFTJob"), OperatorSettings(gpu_resource_name="gpu.intel.com/i915"), {}, "h"
    )
    assert default_gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "gpu.intel.com/i915": "1",
        "ephemeral-storage": "20Gi",
    }


def test_multi_node_is_an_indexed_job_with_a_rendezvous_service() -> None:
    job = _job(
        "SFTJob",
        {"resources": {"nodes": 3, "gpusPerNode": 8}, "output": {"accessModes": ["ReadWriteMany"]}},
    )
    rendered = batch_job(job, SETTINGS, {}, "h")
    spec = rendered["spec"]
    assert (spec["completions"], spec["parallelism"], spec["completionMode"]) == (3, 3, "Indexed")
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == "demo-sft"
    command = pod["containers"][0]["command"]
    assert "--node_rank=$(JOB_COMPLETION_INDEX)" in command
    assert "--master_addr=demo-sft-0.demo-sft" in command and "--nnodes=3" in command
    assert command[:3] == ["python", "-m", "rlhf_trainer.launch"]
    # The static rendezvous waits as long as the gang may take to start, and a margin.
    assert "--rdzv_conf=timeout=660" in command and "--shutdown-timeout=110" in command
    # Rank 0 decides success; the operator restarts the group (backoffLimit 0 on the Job).
    assert spec["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    assert spec["podReplacementPolicy"] == "Failed" and spec["backoffLimit"] == 0
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [65, 78]
    assert rules[1] == {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert rules[2]["action"] == "Ignore" and rules[2]["onExitCodes"]["values"] == [143]
    longer = _job(
        "SFTJob",
        {
            "resources": {"nodes": 2},
            "output": {"accessModes": ["ReadWriteMany"]},
            "runPolicy": {"startDeadlineSeconds": 1800},
        },
    )
    assert (
        "--rdzv_conf=timeout=1860"
        in batch_job(longer, SETTINGS, {}, "h")["spec"]["template"]["spec"]["containers"][0][
            "command"
        ]
    )
    one_node = batch_job(_job("SFTJob"), SETTINGS, {}, "h")["spec"]
    assert "successPolicy" not in one_node and one_node["backoffLimit"] == 3
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert (
        "job-completion-index" in env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    )
    service = headless_service(job)
    assert service["spec"]["clusterIP"] == "None" and service["metadata"]["name"] == "demo-sft"
    assert headless_service(_job("SFTJob")) is None


def test_output_claim_defaults_existing_claims_and_retention() -> None:
    claim = output_claim(_job("SFTJob", {"output": {"size": "50Gi"}}), SETTINGS)
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "50Gi"}},
        "storageClassName": "fast",
    }
    assert claim["metadata"]["ownerReferences"][0]["uid"] == "1234"
    kept = output_claim(_job("SFTJob", {"output": {"retain": True}}), SETTINGS)
    assert "ownerReferences" not in kept["metadata"]
    existing = _job("SFTJob", {"output": {"existingClaim": "shared"}})
    assert output_claim(existing, SETTINGS) is None
    assert child_names(existing).output_claim == "shared"


def test_queue_name_hands_the_job_to_kueue_suspended() -> None:
    rendered = batch_job(_job("SFTJob", {"queueName": "team-a"}), SETTINGS, {}, "h")
    assert rendered["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert rendered["spec"]["suspend"] is True
    assert batch_job(_job("SFTJob"), SETTINGS, {}, "h")["spec"]["suspend"] is False


def test_hub_tokens_come_from_the_referenced_secret_only() -> None:
    job = _job(
        "SFTJob",
        {"model": {"hub": {"id": "org/private", "tokenSecretRef": {"name": "hf", "key": "token"}}}},
    )
    env = batch_job(job, SETTINGS, {}, "h")["spec"]["template"]["spec"]["containers"][0]["env"]
    secrets = [e for e in env if "secretKeyRef" in e.get("valueFrom", {})]
    assert secrets == [
        {
            "name": "RLHF_HUB_TOKEN_MODEL",
            "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
        }
    ]


def test_config_map_holds_the_trainer_config_parsed_by_the_same_models() -> None:
    job = _job("PPOJob")
    config = trainer_config(
        job, input_paths=input_paths(PPO_CLAIMS), output="/output", metrics_port=9090
    )
    rendered = config_map(job, config)
    parsed = TrainerConfig.model_validate(json.loads(rendered["data"]["config.json"]))
    assert parsed.job.spec == job.spec
    assert parsed.paths.inputs == {
        "policy": "/inputs/policy/model",
        "rewardModel": "/inputs/rewardModel/model",
    }


@pytest.mark.parametrize("kind", ["SFTJob", "RewardModelJob", "PPOJob", "DPOJob"])
def test_rendered_objects_validate_against_the_kubernetes_schema(kind: str) -> None:
    job = _job(
        kind,
        {"resources": {"nodes": 2, "gpusPerNode": 2}, "output": {"accessModes": ["ReadWriteMany"]}},
    )
    claims = PPO_CLAIMS if kind == "PPOJob" else {}
    config = trainer_config(
        job, input_paths=input_paths(claims), output="/output", metrics_port=9090
    )
    for document in (
        batch_job(job, SETTINGS, claims, "h"),
        config_map(job, config),
        output_claim(job, SETTINGS),
        headless_service(job),
    ):
        kubernetes_validate.validate(document, "1.35", strict=True)
