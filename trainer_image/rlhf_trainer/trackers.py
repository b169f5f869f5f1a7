"""Experiment trackers named in ``spec.trackers``: TensorBoard, MLflow, Weights & Biases.

transformers' Trainer (SFT, reward models) logs to them through ``report_to``; PPO, our own
loop, logs through ``TrackerLog``. TensorBoard writes event files to ``<output>/tensorboard``;
MLflow and W&B take their server and credentials from the environment (``spec.env``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
TENSORBOARD_DIR = "tensorboard"


def check_installed(trackers: list[str]) -> None:
    """Refuse, before training, a tracker whose package the image lacks."""
    for tracker in trackers:
        if importlib.util.find_spec(PACKAGES[tracker]) is None:
            raise ConfigError(
                f"tracker {tracker} needs the {PACKAGES[tracker]} package in the trainer image;"
                " install it there or remove it from spec.trackers",
                field="spec.trackers",
            )


def report_to(trackers: list[str], output_dir: Path) -> list[str] | str:
    """TrainingArguments.report_to; points transformers' TensorBoard callback at our folder."""
    if not trackers:
        return "none"
    check_installed(trackers)
    if "tensorboard" in trackers:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(output_dir / TENSORBOARD_DIR)
    return list(trackers)


class TrackerLog:
    """Figures from a loop of our own (PPO) to the requested trackers, main process only."""

    def __init__(self, trackers: list[str], output_dir: Path, run_name: str, config: Any) -> None:
        check_installed(trackers)
        self.writers: list[Any] = []
        if "tensorboard" in trackers:
            from torch.utils.tensorboard import SummaryWriter

            self.writers.append(_TensorBoard(SummaryWriter(str(output_dir / TENSORBOARD_DIR))))
        if "mlflow" in trackers:
            self.writers.append(_MLflow(run_name, config))
        if "wandb" in trackers:
            self.writers.append(_WandB(run_name, config))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for writer in self.writers:
            writer.log(metrics, step)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


class _TensorBoard:
    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def log(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, run_name: str, config: Any) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.start_run(run_name=run_name)
        mlflow.log_params({"job": run_name})

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({name.replace("/", "_"): v for name, v in metrics.items()}, step)

    def close(self) -> None:
        self.mlflow.end_run()


class _WandB:
    def __init__(self, run_name: str, config: Any) -> None:
        import wandb

        self.run = wandb.init(name=run_name, config=config)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()
