"""Experiment trackers: off by default; TensorBoard event files hold every stage's figures;
a tracker the image cannot run is refused before training."""

from __future__ import annotations

from pathlib import Path

import pytest
from rlhf_trainer import ppo, sft
from rlhf_trainer.lifecycle import run_stage

from tests.trainer.conftest import CPU, job_manifest


def _scalars(folder: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[float]] = {}
    for events in folder.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            found.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
    return found


SFT = {
    **CPU,
    "model": {"preset": "tiny"},
    "dataset": {"preset": "tiny", "evalFraction": 0.1},
    "training": {"maxSteps": 8, "batchSize": 4, "maxLength": 32, "loggingSteps": 2},
    "generation": {"samples": 0},
}


def test_sft_logs_its_figures_to_tensorboard(write_config) -> None:
    config, output = write_config(
        job_manifest("SFTJob", "tb", {**SFT, "trackers": ["tensorboard"]})
    )
    assert run_stage("sft", config, sft.train) == 0
    scalars = _scalars(output / "tensorboard")
    assert len(scalars["train/loss"]) == 5  # the first step, then steps 2, 4, 6, 8
    assert "train/learning_rate" in scalars and "eval/loss" in scalars


def test_no_tracker_by_default(write_config) -> None:
    config, output = write_config(job_manifest("SFTJob", "none", SFT))
    assert run_stage("sft", config, sft.train) == 0
    assert not (output / "tensorboard").exists()
    assert not any(output.rglob("events.out.tfevents.*"))


def test_ppo_logs_its_figures_to_tensorboard(write_config) -> None:
    spec = {
        **CPU,
        "policy": {"preset": "tiny"},
        "rewardModel": {"preset": "tiny"},
        "dataset": {"preset": "tiny"},
        "ppo": {"totalEpisodes": 16, "rolloutBatchSize": 8, "responseLength": 4, "evalPrompts": 4},
        "training": {"batchSize": 8, "loggingSteps": 1},
        "trackers": ["tensorboard"],
    }
    config, output = write_config(job_manifest("PPOJob", "tb", spec))
    assert run_stage("ppo", config, ppo.train) == 0
    scalars = _scalars(output / "tensorboard")
    assert len(scalars["objective/scores"]) == 2  # one per update
    assert "objective/kl" in scalars and "eval/reward_policy" in scalars


def test_a_tracker_the_image_cannot_run_is_refused(write_config, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    config, _ = write_config(job_manifest("SFTJob", "mlflow", {**SFT, "trackers": ["mlflow"]}))
    assert run_stage("sft", config, sft.train) == 78
    termination = (config.with_name("run.termination")).read_text()
    assert "spec.trackers" in termination and "mlflow package" in termination


@pytest.mark.parametrize("trackers", [["tensorboard", "tensorboard"]])
def test_a_tracker_named_twice_is_refused(trackers: list[str]) -> None:
    from rlhf_operator.api import ManifestError, parse_manifest

    with pytest.raises(ManifestError, match="trackers: name each tracker once"):
        parse_manifest(job_manifest("SFTJob", "twice", {**SFT, "trackers": trackers}))
