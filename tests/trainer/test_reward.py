"""Reward models learn preferences, rankings and ratings on the tiny preset."""

from __future__ import annotations

from rlhf_trainer.lifecycle import run_stage
from rlhf_trainer.reward import train

from tests.trainer.conftest import CPU, job_manifest, summary

TRAINING = {"maxSteps": 60, "learningRate": 1e-3, "batchSize": 8, "maxLength": 64, "evalSteps": 60}


def _spec(data_format: str) -> dict:
    return {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "format": data_format, "evalFraction": 0.2},
        "training": TRAINING,
    }


def test_pairwise_preferences_reach_high_accuracy(write_config) -> None:
    config, output = write_config(job_manifest("RewardModelJob", "pairs", _spec("preference")))
    assert run_stage("rm", config, train) == 0
    metrics = summary(output)["metrics"]
    assert metrics["eval_accuracy"] >= 0.9
    assert metrics["eval_mean_margin"] > 0
    assert (output / "model" / "COMPLETE").exists()


def test_rankings_are_expanded_to_pairs_and_learnt(write_config) -> None:
    config, output = write_config(job_manifest("RewardModelJob", "ranks", _spec("ranking")))
    assert run_stage("rm", config, train) == 0
    assert summary(output)["metrics"]["eval_accuracy"] >= 0.9


def test_ratings_are_learnt_by_regression(write_config) -> None:
    spec = _spec("rating")
    spec["training"] = {**TRAINING, "maxSteps": 150, "learningRate": 3e-3}
    config, output = write_config(job_manifest("RewardModelJob", "ratings", spec))
    assert run_stage("rm", config, train) == 0
    metrics = summary(output)["metrics"]
    assert metrics["eval_spearman"] > 0.7 and metrics["eval_pearson"] > 0.7
    assert summary(output)["keyMetric"].startswith("eval_spearman=")
