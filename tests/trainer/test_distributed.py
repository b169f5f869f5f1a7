"""Two processes on CPU (gloo): FSDP2 publishes the trained model whole, and a SIGTERM that
reaches one process stops both at the same step.

The processes are started the way torchrun starts them (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT), without torchrun, so each one's exit code and pid are the test's own.
FSDP runs through ``tests/trainer/fsdp_launch.py``: accelerate 1.15 enables FSDP only on
GPU-like devices, and the launcher lifts exactly that gate (see its docstring); everything
else is the real FSDP2 path of transformers 5.24 + accelerate 1.15 + torch 2.15. DeepSpeed
is not installed here: ZeRO-3 is checked by the settings it receives, and both strategies
are in bench/gpu_throughput.py's device checklist.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rlhf_trainer.hf import distributed_arguments
from rlhf_trainer.lifecycle import EXIT_INTERRUPTED

from tests.trainer.conftest import job_manifest, summary
from tests.trainer.fsdp_launch import trained_weights

FSDP_LAUNCH = Path(__file__).with_name("fsdp_launch.py")
TRAINING = {"learningRate": 1e-3, "batchSize": 4, "maxLength": 64, "loggingSteps": 2}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(
    command: list[str], config: Path, env: dict[str, str] | None = None
) -> list[subprocess.Popen[str]]:
    """Two trainer processes of one job, as torchrun would start them on one node."""
    port = str(_free_port())
    return [
        subprocess.Popen(
            [*command, "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={
                **os.environ,
                **(env or {}),
                "OMP_NUM_THREADS": "1",
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": "2",
                "LOCAL_WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
            },
        )
        for rank in (0, 1)
    ]


def _finish(processes: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    results = []
    for process in processes:
        try:
            out, _ = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise
        results.append((process.returncode, out))
    return results


# --- settings ----------------------------------------------------------------------------


def test_fsdp_settings_are_the_fsdp2_settings_transformers_hands_to_accelerate(
    tmp_path: Path,
) -> None:
    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers import TrainingArguments

    arguments = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, **distributed_arguments("fsdp")
    )
    plugin = arguments.fsdp_plugin_args
    assert plugin == {
        "fsdp_version": 2,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "cpu_ram_efficient_loading": True,
        "state_dict_type": "FULL_STATE_DICT",
        "activation_checkpointing": False,
        "reshard_after_forward": True,
    }
    built = FullyShardedDataParallelPlugin(**plugin)  # accelerate accepts them as FSDP2
    assert built.fsdp_version == 2 and built.reshard_after_forward is True


def test_gradient_checkpointing_under_fsdp_is_fsdps_own(tmp_path: Path) -> None:
    """The Trainer refuses activation checkpointing set both in fsdp_config and as the
    training argument: under fsdp it goes to fsdp_config only."""
    from transformers import TrainingArguments

    settings = distributed_arguments("fsdp", gradient_checkpointing=True)
    arguments = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, **settings)
    assert arguments.fsdp_plugin_args["activation_checkpointing"] is True
    assert not arguments.activation_checkpointing


def test_a_jobs_gradient_checkpointing_under_fsdp_reaches_fsdp_only(tmp_path: Path) -> None:
    """training.gradientCheckpointing under fsdp: FSDP's activation checkpointing on, the
    Trainer's off (transformers refuses both at once)."""
    from types import SimpleNamespace

    from rlhf_operator.api import SFTJob
    from rlhf_trainer.hf import training_arguments

    job = SFTJob.model_validate(
        job_manifest(
            "SFTJob",
            "ckpt",
            {
                "resources": {"gpusPerNode": 1},
                "distributed": {"strategy": "fsdp"},
                "model": {"preset": "tiny"},
                "dataset": {"preset": "tiny"},
                "training": {"gradientCheckpointing": True},
            },
        )
    )
    context = SimpleNamespace(
        spec=job.spec, checkpoint_dir=tmp_path, device="cuda", precision="bf16"
    )
    arguments = training_arguments(context, job.spec.training, has_eval=False)  # type: ignore[arg-type]
    assert arguments["activation_checkpointing"] is False
    assert arguments["fsdp_config"]["activation_checkpointing"] is True
    assert arguments["fsdp_config"]["version"] == 2


def test_zero3_gathers_16_bit_weights_when_the_model_is_saved() -> None:
    """DeepSpeed is not installed here, so ZeRO is checked by the config it receives."""
    zero3 = distributed_arguments("deepspeed-zero3")["deepspeed"]
    assert zero3["zero_optimization"]["stage"] == 3
    assert zero3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero3["train_micro_batch_size_per_gpu"] == "auto"
    zero2 = distributed_arguments("deepspeed-zero2")["deepspeed"]["zero_optimization"]
    assert zero2["stage"] == 2 and "stage3_gather_16bit_weights_on_model_save" not in zero2
    assert distributed_arguments("ddp") == {}


# --- FSDP2 on CPU: the published model is the trained one, whole -------------------------


@pytest.mark.parametrize(
    ("kind", "stage", "auto_class"),
    [
        ("SFTJob", "sft", "AutoModelForCausalLM"),
        ("RewardModelJob", "rm", "AutoModelForSequenceClassification"),
    ],
)
def test_fsdp_on_two_processes_publishes_the_trained_weights_whole(
    write_config, preset_cache: Path, tmp_path: Path, kind: str, stage: str, auto_class: str
) -> None:
    import torch
    import transformers
    from safetensors.torch import load_file

    spec: dict[str, Any] = {
        "resources": {"gpusPerNode": 1},  # the API's rule; the config's device is cpu
        "distributed": {"strategy": "fsdp"},
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "maxSamples": 64},
        "training": {**TRAINING, "maxSteps": 4},
        "runPolicy": {"checkpointInterval": 1000},
    }
    if kind == "SFTJob":
        spec["generation"] = {"samples": 2, "maxNewTokens": 8}
    config, output = write_config(job_manifest(kind, f"fsdp-{stage}", spec))
    shards = tmp_path / "shards"
    results = _finish(
        _start([sys.executable, str(FSDP_LAUNCH), stage], config, {"RLHF_TEST_SHARDS": str(shards)})
    )
    for code, log in results:
        assert code == 0, log[-4000:]
    assert summary(output)["worldSize"] == 2

    trained = trained_weights(shards, 2)
    published = load_file(output / "model" / "model.safetensors")
    assert published.keys() == trained.keys()
    for name, weight in trained.items():
        assert torch.equal(published[name], weight), name
    # Trained, not merely copied: the weights moved from the preset's.
    initial = load_file(next(preset_cache.glob("presets/tiny-*/model.safetensors")))
    shared = initial.keys() & published.keys()  # a reward model's new score head aside
    assert any(not torch.equal(initial[name], published[name]) for name in shared)

    model, info = getattr(transformers, auto_class).from_pretrained(
        output / "model", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    for name, weight in model.state_dict().items():
        if name in published:
            assert weight.numel() > 0 and torch.equal(weight, published[name]), name
    if kind == "SFTJob":  # generated on rank 0 from the gathered model, after training
        samples = (output / "model" / "samples.jsonl").read_text().splitlines()
        assert len(samples) == 2 and all(json.loads(row)["completion"] for row in samples)


def test_fsdp_with_lora_publishes_the_adapters_merged_into_the_trained_base(
    write_config, tmp_path: Path
) -> None:
    """A sharded PeftModel saves only its adapter: rank 0 loads the base again under it
    and merges. The published weights are what merging the trained shards gives."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    r, alpha = 4, 8
    spec = {
        "resources": {"gpusPerNode": 1},
        "distributed": {"strategy": "fsdp"},
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "maxSamples": 64},
        "training": {**TRAINING, "maxSteps": 4, "learningRate": 1e-2},
        "lora": {"r": r, "alpha": alpha},
        "runPolicy": {"checkpointInterval": 1000},
    }
    config, output = write_config(job_manifest("RewardModelJob", "fsdp-lora", spec))
    shards = tmp_path / "shards"
    results = _finish(
        _start([sys.executable, str(FSDP_LAUNCH), "rm"], config, {"RLHF_TEST_SHARDS": str(shards)})
    )
    for code, log in results:
        assert code == 0, log[-4000:]

    trained = trained_weights(shards, 2)
    expected: dict[str, Any] = {}
    for name, weight in trained.items():
        if ".lora_" in name or ".original_module." in name:
            continue
        if name.endswith(".base_layer.weight"):
            stem = name.removesuffix(".base_layer.weight")
            delta = (
                trained[f"{stem}.lora_B.default.weight"] @ trained[f"{stem}.lora_A.default.weight"]
            )
            weight = weight + (alpha / r) * delta
        key = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        expected[key.replace(".modules_to_save.default.", ".")] = weight
    published = load_file(output / "model" / "model.safetensors")
    assert published.keys() == expected.keys()
    for name, weight in expected.items():
        assert torch.allclose(published[name], weight, atol=1e-6), name
    adapted = [n for n in trained if n.endswith(".base_layer.weight")]
    assert adapted and any(
        not torch.equal(
            trained[n], published[n.removeprefix("base_model.model.").replace(".base_layer.", ".")]
        )
        for n in adapted
    )  # the adapters learned something, and it is in the published weights
    _, info = AutoModelForSequenceClassification.from_pretrained(
        output / "model", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]


# --- SIGTERM agreed across processes -----------------------------------------------------


def _wait_for_checkpoint(output: Path, step: int, processes: list[subprocess.Popen[str]]) -> None:
    marker = output / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json"
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert all(p.poll() is None for p in processes), "a process ended before the checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


def test_sigterm_to_one_process_stops_both_at_the_same_step_then_the_rerun_resumes(
    write_config,
) -> None:
    spec = {
        "resources": {"gpusPerNode": 0},
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny"},
        "training": {**TRAINING, "maxSteps": 60, "loggingSteps": 10},
        "generation": {"samples": 0},
        "runPolicy": {"checkpointInterval": 10, "checkpointsToKeep": 2},
    }
    config, output = write_config(job_manifest("SFTJob", "agreed-stop", spec))
    trainer = [sys.executable, "-m", "rlhf_trainer", "sft"]
    processes = _start(trainer, config)
    _wait_for_checkpoint(output, 10, processes)
    processes[1].send_signal(signal.SIGTERM)  # one pod of a multi-node job is evicted
    (code0, log0), (code1, log1) = _finish(processes)

    assert (code0, code1) == (EXIT_INTERRUPTED, EXIT_INTERRUPTED), log0[-3000:] + log1[-3000:]
    assert "SIGTERM" in log1 and "SIGTERM" not in log0  # only process 1 was told
    stopped = [
        int(line.rsplit(" ", 1)[1])
        for log in (log0, log1)
        for line in log.splitlines()
        if ": stopping at step " in line
    ]
    assert len(stopped) == 2 and stopped[0] == stopped[1], stopped
    step = stopped[0]
    assert 10 <= step < 60
    checkpoint = output / "checkpoints" / f"checkpoint-{step}"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == step
    assert (checkpoint / "rng_state_0.pth").exists() and (checkpoint / "rng_state_1.pth").exists()
    assert not (output / "model").exists()

    (code0, log0), (code1, log1) = _finish(_start(trainer, config))
    assert (code0, code1) == (0, 0), log0[-3000:] + log1[-3000:]
    assert f"resuming from checkpoint-{step}" in log0
    assert summary(output)["steps"] == 60
    assert (output / "model" / "COMPLETE").exists()


@pytest.mark.parametrize("estimator", ["grpo", "reinforce++"])
def test_estimators_without_a_value_model_on_two_processes(write_config, estimator: str) -> None:
    """DDP over two processes without a value model: grpo's groups each live on one process,
    reinforce++ normalises over the batch of both (an all-reduce); both finish, in step."""
    spec = {
        "resources": {"gpusPerNode": 0},
        "policy": {"preset": "tiny"},
        "rewardModel": {"preset": "tiny"},
        "dataset": {"preset": "tiny"},
        "training": {"learningRate": 1e-3, "batchSize": 4, "loggingSteps": 1},
        "ppo": {
            "advantageEstimator": estimator,
            "samplesPerPrompt": 2,
            "totalEpisodes": 32,
            "rolloutBatchSize": 8,
            "miniBatches": 2,
            "epochs": 1,
            "responseLength": 4,
            "evalPrompts": 4,
        },
        "runPolicy": {"checkpointInterval": 1},
    }
    config, output = write_config(job_manifest("PPOJob", "two-processes", spec))
    results = _finish(_start([sys.executable, "-m", "rlhf_trainer", "ppo"], config))
    assert [code for code, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    result = summary(output)
    assert result["steps"] == 2  # 32 responses / (8 per process x 2 processes)
    metrics = result["metrics"]
    assert metrics["episode"] == 32 and "loss/value_avg" not in metrics
    assert ("objective/frac_reward_zero_std" in metrics) == (estimator == "grpo")
    checkpoint = output / "checkpoints" / "checkpoint-2"
    assert (checkpoint / "rng_state_0.pt").exists() and (checkpoint / "rng_state_1.pt").exists()
    assert not (checkpoint / "value_model.safetensors").exists()
