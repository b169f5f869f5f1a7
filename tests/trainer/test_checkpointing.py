"""Checkpoints by time as well as by steps, counted the same way in every stage."""

from __future__ import annotations

from pathlib import Path

from rlhf_trainer.checkpointing import CheckpointSchedule
from rlhf_trainer.lifecycle import run_stage
from rlhf_trainer.sft import train

from tests.trainer.conftest import CPU, job_manifest
from tests.trainer.test_ppo_core import make_loop, small_hyperparameters


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_checkpoint_is_due_after_the_interval_in_steps_or_in_minutes() -> None:
    clock = FakeClock()
    asked: list[bool] = []

    def agree(flag: bool) -> bool:
        asked.append(flag)
        return flag

    schedule = CheckpointSchedule(every_steps=500, every_minutes=30, clock=clock, agree=agree)
    clock.now += 29 * 60
    assert not schedule.due(7)
    assert schedule.due(500)  # the step interval, whatever the time
    clock.now += 60
    assert schedule.due(8)  # 30 minutes since the start, long before step 500
    schedule.saved()
    clock.now += 60
    assert not schedule.due(9)  # the clock restarts at each save
    assert asked == [False, True, False]  # the time condition is put to every rank

    # 0 minutes: steps only.
    steps_only = CheckpointSchedule(every_steps=5, every_minutes=0, clock=clock, agree=agree)
    clock.now += 10**6
    assert not steps_only.due(4) and steps_only.due(5)


def test_another_rank_being_due_makes_every_rank_save() -> None:
    clock = FakeClock()
    schedule = CheckpointSchedule(
        every_steps=500, every_minutes=30, clock=clock, agree=lambda _: True
    )
    assert schedule.due(1)  # this rank's clock says no; another rank's says yes


def _checkpoints(output: Path) -> list[str]:
    folder = output / "checkpoints"
    return sorted(p.name for p in folder.glob("checkpoint-*")) if folder.is_dir() else []


def test_sft_saves_by_time_long_before_the_step_interval(write_config) -> None:
    spec = {
        **CPU,
        "task": "sequence-classification",
        "labels": ["negative", "positive"],
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "format": "classification"},
        "training": {"maxSteps": 3, "batchSize": 8, "maxLength": 32},
        "runPolicy": {"checkpointInterval": 1000, "checkpointsToKeep": 5},
    }
    timed = {**spec, "runPolicy": {**spec["runPolicy"], "checkpointIntervalMinutes": 1e-6}}
    config, output = write_config(job_manifest("SFTJob", "timed", timed), name="timed")
    assert run_stage("sft", config, train) == 0
    assert _checkpoints(output) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]

    config, output = write_config(job_manifest("SFTJob", "stepped", spec), name="stepped")
    assert run_stage("sft", config, train) == 0
    # 30 minutes have not passed: only transformers' own save at the end of training.
    assert _checkpoints(output) == ["checkpoint-3"]


def test_ppo_saves_by_time_long_before_the_update_interval(tmp_path: Path) -> None:
    loop = make_loop(small_hyperparameters(2))
    checkpoints = tmp_path / "checkpoints"
    loop.train(checkpoint_dir=checkpoints, checkpoint_interval=500, checkpoint_minutes=1e-6)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-1", "checkpoint-2"]
