"""Reward models learn preferences, rankings and ratings, as text or chat messages, on the
tiny preset and on a real pretrained BERT-style encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rlhf_trainer.lifecycle import run_stage
from rlhf_trainer.presets import tiny_records
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
    spec = _spec("preference")
    spec["dataset"]["testFraction"] = 0.2
    config, output = write_config(job_manifest("RewardModelJob", "pairs", spec))
    assert run_stage("rm", config, train) == 0
    result = summary(output)
    metrics = result["metrics"]
    assert metrics["eval_accuracy"] >= 0.9
    assert metrics["eval_mean_margin"] > 0
    # Held-out test pairs are scored once at the end and reported apart.
    assert metrics["test_accuracy"] >= 0.9 and metrics["test_mean_margin"] > 0
    assert result["keyMetric"].startswith("test_accuracy=")
    assert [row for row in result["history"] if "test_accuracy" in row] == result["history"][-1:]
    assert (output / "model" / "COMPLETE").exists()


def test_rankings_are_expanded_to_pairs_and_learnt(write_config) -> None:
    config, output = write_config(job_manifest("RewardModelJob", "ranks", _spec("ranking")))
    assert run_stage("rm", config, train) == 0
    assert summary(output)["metrics"]["eval_accuracy"] >= 0.9


def test_ratings_are_learnt_by_regression(write_config) -> None:
    spec = _spec("rating")
    spec["dataset"]["testFraction"] = 0.2
    spec["training"] = {**TRAINING, "maxSteps": 150, "learningRate": 3e-3}
    config, output = write_config(job_manifest("RewardModelJob", "ratings", spec))
    assert run_stage("rm", config, train) == 0
    metrics = summary(output)["metrics"]
    assert metrics["eval_spearman"] > 0.7 and metrics["eval_pearson"] > 0.7
    assert metrics["test_spearman"] > 0.7 and "test_mse" in metrics
    assert summary(output)["keyMetric"].startswith("test_spearman=")


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text.strip()}]


CONVERSATIONAL_SHAPES = {
    # trl-lib/ultrafeedback_binarized: whole conversations, the prompt implicit in both.
    "implicit-prompt-messages": lambda row: {
        "chosen": _user(row["prompt"]) + _assistant(row["chosen"]),
        "rejected": _user(row["prompt"]) + _assistant(row["rejected"]),
    },
    # TRL's explicit-prompt conversational preference.
    "explicit-prompt-messages": lambda row: {
        "prompt": _user(row["prompt"]),
        "chosen": _assistant(row["chosen"]),
        "rejected": _assistant(row["rejected"]),
    },
}


def _write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("shape", sorted(CONVERSATIONAL_SHAPES))
def test_conversational_preferences_are_learnt_in_chat_form(
    write_config, tmp_path: Path, shape: str
) -> None:
    rows = [CONVERSATIONAL_SHAPES[shape](row) for row in tiny_records("rm", "preference", 160, 0)]
    data = _write_rows(tmp_path / "pairs.jsonl", rows)
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"pvc": {"claimName": "data", "path": "pairs.jsonl"}, "evalFraction": 0.2},
        "training": TRAINING,
    }
    config, output = write_config(
        job_manifest("RewardModelJob", "chat-pairs", spec), inputs={"dataset": str(data)}
    )
    assert run_stage("rm", config, train) == 0
    assert summary(output)["metrics"]["eval_accuracy"] >= 0.9
    saved = json.loads((output / "model" / "scoring.json").read_text())
    assert saved == {"conversational": True, "append_eos": False, "max_length": 64}


def test_conversational_ratings_are_learnt_without_eos(write_config, tmp_path: Path) -> None:
    rows = [
        {
            "prompt": _user(row["text"].split(":")[0] + ":"),
            "response": _assistant(row["text"].split(":", 1)[1]),
            "score": row["score"],
        }
        for row in tiny_records("rm", "rating", 200, 0)
    ]
    data = _write_rows(tmp_path / "ratings.jsonl", rows)
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"pvc": {"claimName": "data", "path": "ratings.jsonl"}, "evalFraction": 0.2},
        "training": {**TRAINING, "maxSteps": 150, "learningRate": 3e-3},
    }
    config, output = write_config(
        job_manifest("RewardModelJob", "chat-ratings", spec), inputs={"dataset": str(data)}
    )
    assert run_stage("rm", config, train) == 0
    assert summary(output)["metrics"]["eval_spearman"] > 0.7
    saved = json.loads((output / "model" / "scoring.json").read_text())
    assert saved["conversational"] is True and saved["append_eos"] is False


def test_a_pretrained_bert_encoder_without_eos_learns_preferences(
    write_config, tmp_path: Path
) -> None:
    """The real all-MiniLM-L6-v2 (WordPiece, no EOS token) from a claim path: TRL's add-EOS
    step used to crash on it (``endswith first arg must be str ... not NoneType``)."""
    import all_minilm_l6_v2

    model_folder = all_minilm_l6_v2.extract_model(str(tmp_path / "minilm"))
    spec = {
        **CPU,
        "model": {"pvc": {"claimName": "models", "path": "minilm"}},
        "dataset": {
            "preset": "tiny",
            "format": "preference",
            "evalFraction": 0.2,
            "maxSamples": 160,
        },
        "training": {**TRAINING, "maxSteps": 20, "learningRate": 1e-4, "evalSteps": 20},
    }
    config, output = write_config(
        job_manifest("RewardModelJob", "bert", spec), inputs={"model": str(model_folder)}
    )
    assert run_stage("rm", config, train) == 0
    assert summary(output)["metrics"]["eval_accuracy"] >= 0.9
    saved = json.loads((output / "model" / "scoring.json").read_text())
    assert saved == {"conversational": False, "append_eos": False, "max_length": 64}


def test_a_response_that_is_neither_text_nor_messages_is_a_data_error(
    write_config, tmp_path: Path
) -> None:
    rows = [{"chosen": [{"text": "no role"}], "rejected": "fine"}] * 4
    data = _write_rows(tmp_path / "bad.jsonl", rows)
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"pvc": {"claimName": "data", "path": "bad.jsonl"}},
        "training": TRAINING,
    }
    config, _ = write_config(
        job_manifest("RewardModelJob", "bad", spec), inputs={"dataset": str(data)}
    )
    assert run_stage("rm", config, train) == 65
