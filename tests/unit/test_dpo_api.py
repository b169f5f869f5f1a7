"""DPOJob: its model, its place in chains of jobs, and what the operator renders for it."""

from __future__ import annotations

from rlhf_operator.api import DPOJob, kind_info, parse_manifest
from rlhf_operator.chaining import decide
from rlhf_operator.inputs import Upstream, inputs, trainer_config, upstreams
from rlhf_operator.resources import batch_job, child_names
from rlhf_operator.resources.job import input_paths
from rlhf_operator.settings import OperatorSettings

from tests.invalid_manifests import minimal_manifest

SETTINGS = OperatorSettings(trainer_image="registry.example/trainer:1", storage_class="fast")


def _job(kind: str, spec: dict | None = None, name: str = "demo"):  # type: ignore[no-untyped-def]
    manifest = minimal_manifest(kind, name)
    manifest["metadata"].update({"namespace": "team", "uid": "1234"})
    manifest["spec"].update(spec or {})
    return parse_manifest(manifest)


def _succeeded(claim: str) -> dict:
    return {"status": {"phase": "Succeeded", "output": {"claimName": claim, "path": "model"}}}


def test_defaults_follow_trl() -> None:
    job = _job("DPOJob")
    assert isinstance(job, DPOJob)
    settings = job.spec.dpo
    assert (settings.loss_type, settings.beta, settings.label_smoothing) == ("sigmoid", 0.1, 0.0)
    assert settings.reference_free is False
    assert job.spec.training.learning_rate == 1e-6
    assert job.spec.reward_model is None
    info = kind_info(job)
    assert (info.plural, info.short_names, info.stage) == ("dpojobs", ("dpo",), "dpo")


def test_robust_loss_reads_label_smoothing() -> None:
    job = _job("DPOJob", {"dpo": {"lossType": "robust", "labelSmoothing": 0.1}})
    assert job.spec.dpo.label_smoothing == 0.1
    manifest = job.to_manifest()
    assert manifest["spec"]["dpo"] == {
        "lossType": "robust",
        "beta": 0.1,
        "labelSmoothing": 0.1,
        "referenceFree": False,
        "evalPrompts": 64,
        "responseLength": 53,
        "temperature": 0.7,
    }


def test_a_dpo_policy_feeds_a_ppo_job_and_another_dpo_job() -> None:
    for kind in ("PPOJob", "DPOJob"):
        downstream = _job(kind, {"policy": {"fromJob": {"kind": "DPOJob", "name": "aligned"}}})
        assert Upstream("DPOJob", "aligned") in upstreams(downstream)
        waiting = decide(downstream, {})
        assert waiting.readiness == "waiting" and "DPOJob/aligned" in waiting.message
        found = {upstream: _succeeded(f"{upstream.name}-out") for upstream in upstreams(downstream)}
        ready = decide(downstream, found)
        assert ready.readiness == "ready"
        assert ready.input_claims["policy"] == ("aligned-out", "model")


def test_the_judge_is_mounted_like_the_policy() -> None:
    job = _job(
        "DPOJob",
        {
            "policy": {"fromJob": {"kind": "SFTJob", "name": "policy"}},
            "rewardModel": {"fromJob": {"kind": "RewardModelJob", "name": "reward"}},
        },
    )
    assert [(needed.slot, needed.upstream) for needed in inputs(job)] == [
        ("policy", Upstream("SFTJob", "policy")),
        ("rewardModel", Upstream("RewardModelJob", "reward")),
    ]
    claims = {"policy": ("policy-sft-output", "model"), "rewardModel": ("r-rm-output", "model")}
    config = trainer_config(
        job, input_paths=input_paths(claims), output="/output", metrics_port=9090
    )
    assert config.paths.inputs == {
        "policy": "/inputs/policy/model",
        "rewardModel": "/inputs/rewardModel/model",
    }
    assert config.job.spec == job.spec


def test_the_batch_job_runs_the_dpo_stage() -> None:
    job = _job("DPOJob", {"policy": {"preset": "tiny"}})
    assert child_names(job).job == "demo-dpo"
    rendered = batch_job(job, SETTINGS, {}, "h")
    container = rendered["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "dpo"
