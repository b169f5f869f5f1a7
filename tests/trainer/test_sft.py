"""SFT on the tiny preset: the loss falls, classification beats chance, early stopping stops."""

from __future__ import annotations

import json
from pathlib import Path

from rlhf_trainer.lifecycle import run_stage
from rlhf_trainer.sft import train
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from tests.trainer.conftest import CPU, first_logged, job_manifest, summary


def test_causal_lm_learns_and_publishes_a_complete_model(write_config) -> None:
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "evalFraction": 0.1},
        "training": {
            "maxSteps": 120,
            "learningRate": 3e-3,
            "batchSize": 16,
            "maxLength": 64,
            "loggingSteps": 5,
            "evalSteps": 60,
        },
        "generation": {"samples": 3, "maxNewTokens": 12, "temperature": 0},
        "runPolicy": {"checkpointInterval": 60},
    }
    config, output = write_config(job_manifest("SFTJob", "sft", spec))
    assert run_stage("sft", config, train) == 0
    result = summary(output)
    assert result["phase"] == "Succeeded" and result["steps"] == 120
    eval_loss = result["metrics"]["eval_loss"]
    assert eval_loss < 0.5 * first_logged(output, "loss")
    assert abs(result["metrics"]["eval_perplexity"] - 2.718281828**eval_loss) < 1e-3
    # The finished model is complete and reloads; the samples travel with it.
    model = output / "model"
    assert (model / "COMPLETE").exists() and (model / "config.json").exists()
    samples = [json.loads(line) for line in (model / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all(s["prompt"].startswith("Review of") for s in samples)
    # Greedy decoding after training continues a review in the learnt form.
    assert any(" was " in s["completion"] for s in samples)
    assert (output / "report.html").exists() and (output / "plots" / "loss.svg").exists()
    termination = json.loads(config.with_name("run.termination").read_text())
    assert termination["keyMetric"].startswith("eval_loss=")


def test_candidates_for_labeling_are_in_the_ranking_format(write_config) -> None:
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "evalFraction": 0.1, "format": "prompt-completion"},
        "training": {"maxSteps": 10, "learningRate": 3e-3, "batchSize": 8, "maxLength": 64},
        "generation": {
            "samples": 0,
            "maxNewTokens": 8,
            "candidates": {"perPrompt": 3, "maxPrompts": 5},
        },
    }
    config, output = write_config(job_manifest("SFTJob", "candidates", spec))
    assert run_stage("sft", config, train) == 0
    rows = [json.loads(line) for line in (output / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    assert all(set(row) == {"prompt", "responses"} and len(row["responses"]) == 3 for row in rows)


def test_classification_beats_chance_and_matches_sklearn(write_config) -> None:
    spec = {
        **CPU,
        "task": "sequence-classification",
        "labels": ["negative", "positive"],
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "format": "classification", "evalFraction": 0.2},
        "training": {
            "maxSteps": 80,
            "learningRate": 3e-3,
            "batchSize": 16,
            "maxLength": 32,
            "evalSteps": 40,
        },
    }
    config, output = write_config(job_manifest("SFTJob", "classify", spec))
    assert run_stage("sft", config, train) == 0
    metrics = summary(output)["metrics"]
    assert metrics["eval_accuracy"] > 0.9 and metrics["eval_f1_macro"] > 0.9
    rows = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    truth = [row["label"] for row in rows]
    guess = [row["prediction"] for row in rows]
    assert metrics["eval_accuracy"] == accuracy_score(truth, guess)
    assert abs(metrics["eval_f1_macro"] - f1_score(truth, guess, average="macro")) < 1e-9
    assert (
        abs(metrics["eval_precision_macro"] - precision_score(truth, guess, average="macro")) < 1e-9
    )
    assert abs(metrics["eval_recall_macro"] - recall_score(truth, guess, average="macro")) < 1e-9
    report = json.loads((output / "eval.json").read_text())
    assert sum(map(sum, report["confusion_matrix"])) == len(rows)
    assert set(report["per_class"]) == {"negative", "positive"}


def test_early_stopping_stops_before_the_step_budget(write_config) -> None:
    spec = {
        **CPU,
        "task": "sequence-classification",
        "labels": ["negative", "positive"],
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "format": "classification", "evalFraction": 0.2},
        "training": {
            "maxSteps": 400,
            "learningRate": 3e-3,
            "batchSize": 16,
            "maxLength": 32,
            "evalSteps": 10,
        },
        # No evaluation can improve by 10 in accuracy: patience runs out after 1 + 2 evaluations.
        "earlyStopping": {"metric": "eval_accuracy", "patience": 2, "threshold": 10},
    }
    config, output = write_config(job_manifest("SFTJob", "early", spec))
    assert run_stage("sft", config, train) == 0
    assert summary(output)["steps"] == 30


def test_lora_adapters_are_merged_into_a_plain_model(write_config) -> None:
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny"},
        "training": {"maxSteps": 20, "learningRate": 1e-2, "batchSize": 8, "maxLength": 64},
        "lora": {"r": 4, "alpha": 8},
        "generation": {"samples": 0},
    }
    config, output = write_config(job_manifest("SFTJob", "lora", spec))
    assert run_stage("sft", config, train) == 0
    assert (output / "model" / "model.safetensors").exists()
    assert not (output / "model" / "adapter_config.json").exists()
    summary_first = first_logged(output, "loss")
    assert summary(output)["metrics"]["train_loss"] < summary_first


def test_output_without_eval_reports_train_loss(write_config, tmp_path: Path) -> None:
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "format": "text"},
        "training": {"maxSteps": 5, "batchSize": 8, "maxLength": 64},
        "generation": {"samples": 0},
    }
    config, output = write_config(job_manifest("SFTJob", "text", spec))
    assert run_stage("sft", config, train) == 0
    assert summary(output)["keyMetric"].startswith("train_loss=")


def test_packing_trains_on_packed_sequences(write_config) -> None:
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "format": "text"},
        "training": {"maxSteps": 40, "learningRate": 3e-3, "batchSize": 4, "maxLength": 128},
        "packing": True,
        "generation": {"samples": 0},
    }
    config, output = write_config(job_manifest("SFTJob", "packed", spec))
    assert run_stage("sft", config, train) == 0
    assert summary(output)["metrics"]["train_loss"] < first_logged(output, "loss")
    # Packed batches hold several reviews per sequence: far more tokens per step.
    tokens = [row["num_tokens"] for row in summary(output)["history"] if "num_tokens" in row]
    assert tokens[-1] / 40 > 4 * 30
