"""The whole chain on the tiny preset: SFT -> reward model -> PPO raises the reward."""

from __future__ import annotations

import json
import math

from rlhf_trainer import ppo, reward, sft
from rlhf_trainer.lifecycle import run_stage

from tests.trainer.conftest import CPU, job_manifest, summary


def test_ppo_raises_the_reward_model_score_and_beats_the_sft_policy(write_config) -> None:
    sft_config, sft_output = write_config(
        job_manifest(
            "SFTJob",
            "sft",
            {
                **CPU,
                "model": {"preset": "tiny"},
                "dataset": {"preset": "tiny"},
                "training": {
                    "maxSteps": 300,
                    "learningRate": 3e-3,
                    "batchSize": 16,
                    "maxLength": 64,
                },
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
                "dataset": {"preset": "tiny", "evalFraction": 0.2},
                "training": {"maxSteps": 60, "learningRate": 1e-3, "batchSize": 8, "maxLength": 64},
            },
        ),
        inputs={"model": str(sft_output / "model")},
        name="rm",
    )
    assert run_stage("rm", rm_config, reward.train) == 0
    assert summary(rm_output)["metrics"]["eval_accuracy"] >= 0.9

    ppo_config, ppo_output = write_config(
        job_manifest(
            "PPOJob",
            "ppo",
            {
                **CPU,
                "policy": {"fromJob": {"name": "sft"}},
                "rewardModel": {"fromJob": {"name": "rm"}},
                "dataset": {"preset": "tiny"},
                "training": {"learningRate": 3e-4, "batchSize": 8, "loggingSteps": 1},
                "ppo": {
                    "totalEpisodes": 512,
                    "rolloutBatchSize": 32,
                    "miniBatches": 2,
                    "epochs": 2,
                    "klCoef": 0.02,
                    "responseLength": 12,
                    "temperature": 1.0,
                    "evalPrompts": 32,
                },
                "runPolicy": {"checkpointInterval": 8},
            },
        ),
        inputs={"policy": str(sft_output / "model"), "rewardModel": str(rm_output / "model")},
        name="ppo",
    )
    assert run_stage("ppo", ppo_config, ppo.train) == 0
    result = summary(ppo_output)
    scores = [row["objective/scores"] for row in result["history"] if "objective/scores" in row]
    assert result["steps"] == 16 and len(scores) == 16
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3 + 0.5
    metrics = result["metrics"]
    assert metrics["eval/reward_policy"] > metrics["eval/reward_reference"] + 0.5
    assert metrics["eval/win_rate"] > 0.5
    assert math.isfinite(metrics["objective/kl"]) and math.isfinite(metrics["eval/kl"])
    samples = [
        json.loads(line)
        for line in (ppo_output / "model" / "samples.jsonl").read_text().splitlines()
    ]
    assert len(samples) == 32 and {"policy", "reference"} <= set(samples[0])
    assert (ppo_output / "model" / "COMPLETE").exists()
    assert (ppo_output / "plots" / "objective_scores.svg").exists()
