"""The same manifest and seed give the same model and figures; another seed does not.

Every case starts weights that no checkpoint holds (a new classification head, a reward
model's score head, LoRA adapters): they are only reproducible when the seed is set
before the model is loaded, not just when the Trainer is built.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from rlhf_trainer import reward, sft
from rlhf_trainer.lifecycle import run_stage
from safetensors.torch import load_file

from tests.trainer.conftest import CPU, job_manifest, summary

TRAINING = {"maxSteps": 4, "learningRate": 1e-3, "batchSize": 8, "maxLength": 32}

CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "classification-new-head": (
        "sft",
        "SFTJob",
        {
            **CPU,
            "task": "sequence-classification",
            "labels": ["negative", "positive"],
            "model": {"preset": "tiny"},
            "dataset": {"preset": "tiny", "format": "classification", "evalFraction": 0.2},
            "training": TRAINING,
        },
    ),
    "reward-model-score-head": (
        "rm",
        "RewardModelJob",
        {**CPU, "model": {"preset": "tiny"}, "dataset": {"preset": "tiny"}, "training": TRAINING},
    ),
    # TRL's SFTTrainer seeds before it adds adapters; our classifier adds them itself.
    "classification-lora-adapters": (
        "sft",
        "SFTJob",
        {
            **CPU,
            "task": "sequence-classification",
            "labels": ["negative", "positive"],
            "model": {"preset": "tiny"},
            "dataset": {"preset": "tiny", "format": "classification"},
            "training": TRAINING,
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        },
    ),
}
TRAIN = {"sft": sft.train, "rm": reward.train}


def _run(write_config, stage: str, kind: str, spec: dict[str, Any], name: str) -> Path:
    config, output = write_config(job_manifest(kind, name, spec), name=name)
    assert run_stage(stage, config, TRAIN[stage]) == 0
    return output


def _weights(output: Path) -> dict[str, torch.Tensor]:
    return load_file(str(output / "model" / "model.safetensors"))


def _identical(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(
        torch.equal(first[name], second[name]) for name in first
    )


@pytest.mark.parametrize("case", list(CASES))
def test_same_seed_same_model_other_seed_other_model(write_config, case: str) -> None:
    stage, kind, spec = CASES[case]
    first = _run(write_config, stage, kind, spec, "first")
    second = _run(write_config, stage, kind, spec, "second")
    reseeded = copy.deepcopy(spec)
    reseeded["training"]["seed"] = 7
    other = _run(write_config, stage, kind, reseeded, "other")

    assert _identical(_weights(first), _weights(second))
    assert summary(first)["metrics"] == summary(second)["metrics"]
    assert not _identical(_weights(first), _weights(other))
