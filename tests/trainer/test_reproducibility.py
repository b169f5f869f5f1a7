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


def test_real_pretrained_encoder_twice_gives_the_same_classifier(write_config, tmp_path) -> None:
    """The issue's experiment: all-MiniLM-L6-v2 (a real pretrained BERT encoder, loaded by
    path like a user's model on a claim) with a new classification head, on real-ish
    reviews, trained twice with the same manifest."""
    import json

    import all_minilm_l6_v2

    from tests.trainer.reviews import review_rows

    encoder = all_minilm_l6_v2.extract_model(str(tmp_path / "encoder"))
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in review_rows()))
    spec = {
        **CPU,
        "task": "sequence-classification",
        "labels": ["negative", "positive"],
        "model": {"pvc": {"claimName": "models", "path": "all-MiniLM-L6-v2"}},
        "dataset": {
            "pvc": {"claimName": "data", "path": "reviews.jsonl"},
            "evalFraction": 0.25,
            "testFraction": 0.25,
        },
        "training": {"epochs": 5, "learningRate": 5e-4, "batchSize": 8, "maxLength": 24},
    }
    inputs = {"model": str(encoder), "dataset": str(data)}
    outputs = []
    for name in ("first", "second"):
        config, output = write_config(job_manifest("SFTJob", "minilm", spec), inputs, name=name)
        assert run_stage("sft", config, sft.train) == 0
        outputs.append(output)
    first, second = (summary(output)["metrics"] for output in outputs)
    print(
        f"macro F1 (eval, test): first {first['eval_f1_macro']:.3f} {first['test_f1_macro']:.3f},"
        f" second {second['eval_f1_macro']:.3f} {second['test_f1_macro']:.3f}"
    )
    assert first == second
    assert _identical(_weights(outputs[0]), _weights(outputs[1]))
    assert first["test_f1_macro"] > 0.7
