"""What each real stage exports to Prometheus: SFT, reward model and PPO on the tiny preset,
a few steps each, with the registry each run_stage built read back after it."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rlhf_trainer import lifecycle, ppo, reward, sft
from rlhf_trainer.lifecycle import run_stage
from rlhf_trainer.telemetry import Telemetry

from tests.trainer.conftest import CPU, job_manifest


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[Telemetry]:
    """Each Telemetry run_stage builds, to read its registry once the stage ended."""
    telemetries: list[Telemetry] = []

    class Recorded(Telemetry):
        def __init__(self, *arguments: Any, **keywords: Any) -> None:
            super().__init__(*arguments, **keywords)
            telemetries.append(self)

    monkeypatch.setattr(lifecycle, "Telemetry", Recorded)
    return telemetries


def _scrape(telemetry: Telemetry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    text = generate_latest(telemetry.registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def _only(found: dict[str, Any], name: str) -> float:
    (value,) = found[name].values()
    return float(value)


def test_every_stage_exports_its_counters_stage_and_training_series(write_config, built) -> None:
    sft_config, sft_output = write_config(
        job_manifest(
            "SFTJob",
            "sft",
            {
                **CPU,
                "model": {"preset": "tiny"},
                "dataset": {"preset": "tiny"},
                "training": {"maxSteps": 6, "batchSize": 4, "maxLength": 48, "loggingSteps": 2},
                "generation": {"samples": 0},
            },
        ),
        name="sft",
    )
    assert run_stage("sft", sft_config, sft.train) == 0
    rm_config, rm_output = write_config(
        job_manifest(
            "RewardModelJob",
            "rm",
            {
                **CPU,
                "model": {"fromJob": {"name": "sft"}},
                "dataset": {"preset": "tiny", "evalFraction": 0.2, "maxSamples": 40},
                "training": {"maxSteps": 4, "batchSize": 4, "maxLength": 48, "loggingSteps": 2},
            },
        ),
        inputs={"model": str(sft_output / "model")},
        name="rm",
    )
    assert run_stage("rm", rm_config, reward.train) == 0
    ppo_config, _ = write_config(
        job_manifest(
            "PPOJob",
            "ppo",
            {
                **CPU,
                "policy": {"fromJob": {"name": "sft"}},
                "rewardModel": {"fromJob": {"name": "rm"}},
                "dataset": {"preset": "tiny"},
                "training": {"batchSize": 4, "loggingSteps": 1},
                "ppo": {
                    "totalEpisodes": 16,
                    "rolloutBatchSize": 8,
                    "miniBatches": 1,
                    "epochs": 1,
                    "responseLength": 6,
                    "evalPrompts": 4,
                },
            },
        ),
        inputs={"policy": str(sft_output / "model"), "rewardModel": str(rm_output / "model")},
        name="ppo",
    )
    assert run_stage("ppo", ppo_config, ppo.train) == 0

    stages = {}
    for index, (kind, stage) in enumerate(
        (("SFTJob", "sft"), ("RewardModelJob", "rm"), ("PPOJob", "ppo"))
    ):
        found = _scrape(built[index])
        (labels,) = found["rlhf_trainer_info"]
        stages[kind] = dict(labels)["stage"]
        assert not [name for name in found if name.endswith("_created")]
        catch_all = {dict(labels)["metric"] for labels in found.get("rlhf_train_metric", {})}
        # Figures with a series of their own are not repeated in the catch-all.
        assert not catch_all & {"loss", "grad_norm", "learning_rate", "lr", "num_tokens", "epoch"}
        assert not catch_all & {"objective/kl", "objective/scores", "episode", "eps"}
        assert _only(found, "rlhf_training_loss") > 0, (kind, stage)
        assert _only(found, "rlhf_training_gradient_norm") > 0, (kind, stage)
    assert stages == {"SFTJob": "sft", "RewardModelJob": "rm", "PPOJob": "ppo"}

    sft_found, rm_found, ppo_found = (_scrape(telemetry) for telemetry in built)
    assert _only(sft_found, "rlhf_training_steps_total") == 6
    assert _only(sft_found, "rlhf_training_samples_total") == 6 * 4
    assert _only(sft_found, "rlhf_training_tokens_total") > 6 * 4  # several tokens per example
    assert _only(rm_found, "rlhf_training_samples_total") == 4 * 4
    assert "rlhf_ppo_episodes_total" not in sft_found
    assert _only(ppo_found, "rlhf_ppo_episodes_total") == 16
    assert _only(ppo_found, "rlhf_training_steps_total") == 2
    assert "rlhf_training_samples_total" not in ppo_found
    # Where each update's time went, through the real stage's on_log (CPU: no memory peaks).
    phases = {
        dict(labels)["phase"]: value
        for labels, value in ppo_found["rlhf_ppo_phase_seconds"].items()
    }
    assert set(phases) == {
        "generation", "scoring", "policy_logprobs", "reference_logprobs", "advantages", "update"
    }  # fmt: skip
    assert all(value > 0 for value in phases.values())
    assert sum(phases.values()) <= _only(ppo_found, "rlhf_ppo_update_seconds")
    assert _only(ppo_found, "rlhf_ppo_generation_tokens_per_second") > 0
    assert _only(ppo_found, "rlhf_ppo_response_length_tokens") >= 1
    assert 0 <= _only(ppo_found, "rlhf_ppo_truncated_response_ratio") <= 1
    assert "rlhf_ppo_phase_gpu_memory_peak_bytes" not in ppo_found
