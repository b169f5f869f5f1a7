"""DPOJob on the tiny preset: DPO learns, every loss type runs, pairs in every pairwise
shape RewardModelJob accepts, the reward model judges a win rate, and a crashed run resumes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rlhf_trainer.dpo import train
from rlhf_trainer.lifecycle import run_stage

from tests.trainer import hub_shapes
from tests.trainer.conftest import CPU, job_manifest, summary

BASE: dict[str, Any] = {
    **CPU,
    "policy": {"preset": "tiny"},
    "training": {
        "learningRate": 5e-4,
        "batchSize": 16,
        "maxLength": 64,
        "loggingSteps": 2,
    },
    "runPolicy": {"checkpointInterval": 1000},
}


def _spec(**changes: Any) -> dict[str, Any]:
    spec = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key].update(value)
        else:
            spec[key] = value
    return spec


def _run(write_config, spec: dict[str, Any], name: str = "dpo", **inputs: str) -> Path:  # type: ignore[no-untyped-def]
    config, output = write_config(job_manifest("DPOJob", name, spec), inputs, name)
    assert run_stage("dpo", config, train) == 0
    return output


def test_dpo_learns_the_preference_on_held_out_pairs(write_config) -> None:
    started = time.monotonic()
    output = _run(
        write_config,
        _spec(
            dataset={"preset": "tiny", "maxSamples": 256, "evalFraction": 0.2, "testFraction": 0.2},
            training={"epochs": 1},
        ),
    )
    assert time.monotonic() - started < 60
    result = summary(output)
    metrics = result["metrics"]
    # Held-out pairs: the implicit reward (beta x log-ratio to the reference) ranks the
    # chosen answer above the rejected one far above chance, by a margin that grew.
    assert metrics["eval_rewards/accuracies"] >= 0.9, metrics
    assert metrics["test_rewards/accuracies"] >= 0.9, metrics
    assert metrics["test_rewards/margins"] > 0.05, metrics
    assert result["keyMetric"].startswith("test_rewards/accuracies=")
    margins = [row["rewards/margins"] for row in result["history"] if "rewards/margins" in row]
    assert margins[0] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
    assert margins[-1] > margins[0] + 0.05
    assert (output / "model" / "COMPLETE").exists()
    assert "implicit reward accuracy" in (output / "report.html").read_text()


@pytest.mark.parametrize(
    "dpo",
    [
        {"lossType": "ipo", "beta": 0.5},
        {"lossType": "hinge"},
        {"lossType": "robust", "labelSmoothing": 0.1},
        {"lossType": "sigmoid", "referenceFree": True},
    ],
    ids=["ipo", "hinge", "robust", "reference-free"],
)
def test_each_loss_type_trains_and_evaluates(write_config, dpo: dict[str, Any]) -> None:
    output = _run(
        write_config,
        _spec(
            dataset={
                "preset": "tiny",
                "maxSamples": 96,
                "evalFraction": 0.25,
                "testFraction": 0.25,
            },
            training={"maxSteps": 3},
            dpo=dpo,
        ),
    )
    metrics = summary(output)["metrics"]
    for prefix in ("eval", "test"):
        assert {f"{prefix}_loss", f"{prefix}_rewards/accuracies"} <= set(metrics)
    if dpo.get("referenceFree"):
        # No reference: the implicit reward is beta x the policy's own log-probability.
        beta = 0.1
        for prefix in ("eval", "test"):
            assert metrics[f"{prefix}_rewards/chosen"] == pytest.approx(
                beta * metrics[f"{prefix}_logps/chosen"], rel=1e-4
            )


@pytest.mark.parametrize(
    "shape", ["preference", "preference_conversational", "ultrafeedback_binarized", "ranking"]
)
def test_pairs_in_each_shape_reward_model_jobs_accept(
    write_config, tmp_path: Path, shape: str
) -> None:
    data = hub_shapes.write(shape, tmp_path / "data" / f"{shape}.jsonl", count=32)
    output = _run(
        write_config,
        _spec(
            dataset={"pvc": {"claimName": "data", "path": data.name}, "evalFraction": 0.25},
            training={"maxSteps": 2},
        ),
        name=shape.replace("_", "-"),
        dataset=str(data),
    )
    assert "eval_rewards/accuracies" in summary(output)["metrics"]


def test_a_reward_model_judges_the_policy_against_the_reference(write_config) -> None:
    output = _run(
        write_config,
        _spec(
            dataset={"preset": "tiny", "maxSamples": 64, "evalFraction": 0.25},
            rewardModel={"preset": "tiny"},
            training={"maxSteps": 2},
            dpo={"evalPrompts": 5, "responseLength": 6},
        ),
    )
    metrics = summary(output)["metrics"]
    assert 0.0 <= metrics["eval/win_rate"] <= 1.0
    assert {"eval/reward_policy", "eval/reward_reference"} <= set(metrics)
    samples = [json.loads(line) for line in (output / "model" / "samples.jsonl").open()]
    assert len(samples) == 5  # distinct held-out prompts
    assert {"policy", "reference", "policy_score", "reference_score"} <= set(samples[0])


def test_a_crashed_run_resumes_from_its_last_checkpoint(write_config, capsys) -> None:
    spec = _spec(
        dataset={"preset": "tiny", "maxSamples": 96},
        training={"maxSteps": 6, "batchSize": 8},
        runPolicy={"checkpointInterval": 3, "checkpointsToKeep": 3},
    )
    output = _run(write_config, spec)
    finished = summary(output)
    # As if the process died after checkpoint-3: the later checkpoint and the model gone.
    shutil.rmtree(output / "checkpoints" / "checkpoint-6")
    shutil.rmtree(output / "model")
    capsys.readouterr()
    output = _run(write_config, spec)
    assert "resuming from checkpoint-3" in capsys.readouterr().out
    resumed = summary(output)
    assert resumed["steps"] == 6

    # The resumed steps saw the same batches from the same weights: the same losses.
    def last_loss(result: dict[str, Any]) -> float:
        return next(
            row["loss"] for row in reversed(result["history"]) if row["step"] == 6 and "loss" in row
        )

    assert last_loss(resumed) == pytest.approx(last_loss(finished), rel=1e-4)
    assert (output / "model" / "COMPLETE").exists()


def test_ratings_hold_no_pairs_and_fail_as_data_errors(
    write_config, tmp_path: Path, capsys
) -> None:
    from rlhf_trainer.errors import EXIT_DATA_ERROR

    data = hub_shapes.write("rating", tmp_path / "data" / "ratings.jsonl", count=8)
    spec = _spec(dataset={"pvc": {"claimName": "data", "path": data.name}})
    config, _ = write_config(job_manifest("DPOJob", "ratings", spec), {"dataset": str(data)})
    assert run_stage("dpo", config, train) == EXIT_DATA_ERROR
    error = capsys.readouterr().err
    assert "expected columns chosen+rejected or responses" in error and str(data) in error


def test_lora_dpo_uses_the_base_model_as_its_reference_and_publishes_a_merged_model(
    write_config,
) -> None:
    output = _run(
        write_config,
        _spec(
            dataset={"preset": "tiny", "maxSamples": 64, "evalFraction": 0.25},
            training={"maxSteps": 3, "learningRate": 1e-3},
            lora={"r": 4, "alpha": 8},
            earlyStopping={"metric": "eval_rewards/accuracies", "patience": 2},
        ),
    )
    result = summary(output)
    assert "eval_rewards/margins" in result["metrics"]
    # The reference is the base model with the adapters off: the policy as it started
    # (LoRA's B matrices start at zero), so the first implicit rewards are exactly 0.
    first = next(row for row in result["history"] if "rewards/margins" in row)
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    published = output / "model"
    assert (published / "config.json").exists() and not (published / "adapter_config.json").exists()


def test_two_process_data_parallel_dpo(write_config) -> None:
    spec = _spec(
        dataset={"preset": "tiny", "maxSamples": 64, "evalFraction": 0.25},
        training={"maxSteps": 3, "batchSize": 4},
    )
    config, output = write_config(job_manifest("DPOJob", "ddp", spec))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    command += ["--master_port", str(port), "-m", "rlhf_trainer", "dpo", "--config", str(config)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    done = summary(output)
    assert done["worldSize"] == 2 and done["steps"] == 3
    assert "eval_rewards/accuracies" in done["metrics"]
    assert (output / "model" / "COMPLETE").exists()
