"""GPU throughput: SFT tokens/s and MFU, our trainer's defaults vs TRL's, and PPO episodes/s.

For a lent GPU machine (one H200). Self-contained: it builds everything it trains on.

* Model: a Qwen2-style ~0.5B model (Qwen2.5-0.5B's shapes: hidden 896, 24 layers,
  intermediate 4864, 14 heads / 2 KV heads, vocabulary 151936, tied embeddings; 494M
  parameters) with random weights, saved in bf16 (as real checkpoints are) next to the
  tiny preset's tokenizer (text uses ids < 400; the LM head still costs a 151936 vocab).
* Data: "text" rows of concatenated tiny-preset reviews, 5-90 reviews each (~60-1000
  tokens, mean ~500), so padding, packing and padding-free differ as on real data.
* SFT variants (``--variants``), each ``--steps`` optimizer steps of ``--batch`` rows:
    ours           python -m rlhf_trainer's SFT stage (run_stage + sft.train) with our
                   defaults: precision auto (bf16 weights on GPU), no activation
                   checkpointing, no packing
    ours-packing   the same with spec.packing: true
    trl            SFTTrainer with SFTConfig's defaults (model loaded by TRL: fp32 weights,
                   bf16 autocast, activation checkpointing on, no packing)
    trl-nockpt     + activation_checkpointing=False
    trl-packing    + packing (BFD, which implies padding-free)
    trl-padfree    + padding_free=True, max_length=None (rows are shorter than the limit)
    trl-bf16       + model_init_kwargs dtype=bfloat16 (ours' precision choice)
    trl-liger      + use_liger_kernel (only when liger_kernel is installed)
  tokens/s counts real tokens (TRL's ``num_tokens``: attention-mask sum, or packed length)
  between step ``--warmup-steps`` and the last step; MFU = tokens/s x FLOPs/token / peak,
  FLOPs/token = 6 x (matmul parameters) + 6 x layers x hidden x mean document length
  (causal attention), peak bf16 dense from the device name (H100/H200 989 TFLOP/s) or
  ``--peak-tflops``.
* PPO: rlhf_trainer.ppo_core.PPOLoop on the same model (policy, frozen reference, value and
  reward models from the same folder, bf16 on GPU as our PPO stage loads them), random
  prompts of 64-128 tokens, ``--ppo-rollout`` prompts per update, ``--ppo-response``
  tokens; episodes/s over the updates after the first.

Device checklist (``--distributed-check``, about a minute): what cannot be proven on the
CPU machine. The tiny preset's SFT runs under torchrun with ``distributed.strategy: fsdp``
(2 processes when 2 GPUs are visible; on one GPU 1 process, since NCCL refuses two ranks
on one device) through ``tests/trainer/fsdp_launch.py``, which on a GPU machine changes
nothing in accelerate: it checks that the stock accelerate 1.15 really shards (every
parameter a DTensor: no silent DDP), that the published model equals the trained weights
rebuilt from each process's own shards, reloads with no missing or empty tensors, and
that samples were generated. ``deepspeed-zero3`` runs the same when deepspeed is
installed (it is not on the lent machine: reported as skipped) and is checked for a
whole, reloadable model. On CPU (``--cpu-smoke --distributed-check``) it runs with 2
processes and gloo, as tests/trainer/test_distributed.py does.

One run takes a few minutes on an H200 (well under 10); every variant runs in its own
process by default on GPU (``--in-process`` to share one). Prints a table and, when $OUT
is set, writes $OUT/gpu_throughput.json (``--json`` to choose). ``--cpu-smoke`` runs the
same code paths with a tiny config on CPU, all in one process.

    python bench/gpu_throughput.py                  # on the GPU machine
    python bench/gpu_throughput.py --cpu-smoke      # anywhere, in well under a minute
    python bench/gpu_throughput.py --distributed-check   # the device checklist only
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

QWEN2_05B = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "max_position_embeddings": 4096,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
}
SMOKE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
    "tie_word_embeddings": True,
    "max_position_embeddings": 512,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
}
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "H800": 989.4, "A100": 312.0, "L40S": 362.0}
VARIANTS: dict[str, dict[str, Any]] = {
    "ours": {"kind": "ours", "packing": False},
    "ours-packing": {"kind": "ours", "packing": True},
    "trl": {"kind": "trl", "config": {}},
    "trl-nockpt": {"kind": "trl", "config": {"activation_checkpointing": False}},
    "trl-packing": {
        "kind": "trl",
        "config": {"activation_checkpointing": False, "packing": True},
    },
    "trl-padfree": {
        "kind": "trl",
        "config": {"activation_checkpointing": False, "padding_free": True, "max_length": None},
    },
    "trl-bf16": {
        "kind": "trl",
        "config": {"activation_checkpointing": False, "model_init_kwargs": {"dtype": "bfloat16"}},
    },
    "trl-liger": {
        "kind": "trl",
        "config": {"activation_checkpointing": False, "use_liger_kernel": True},
        "needs": "liger_kernel",
    },
}
DEFAULT_VARIANTS = "ours,ours-packing,trl,trl-nockpt,trl-packing,trl-padfree,trl-bf16,trl-liger"


# --- artifacts ----------------------------------------------------------------------------


def build_model(folder: Path, shapes: dict[str, Any], dtype_name: str) -> Path:
    """A Qwen2 causal LM with random weights and the tiny tokenizer, saved once."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from rlhf_trainer.presets import build_tiny_tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(folder)
    config = Qwen2Config(
        **shapes,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() and dtype_name == "bfloat16" else "cpu"
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    model.to(getattr(torch, dtype_name)).save_pretrained(folder)
    del model
    return folder


def write_text_rows(path: Path, count: int, seed: int, reviews: tuple[int, int]) -> Path:
    """Rows of concatenated tiny-preset reviews (variable length documents)."""
    from rlhf_trainer.presets import NEGATIVE, POSITIVE, SUBJECTS, prompt_for, review

    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(*reviews)):
            subject = rng.choice(SUBJECTS)
            words = rng.sample(POSITIVE + NEGATIVE, 2)
            parts.append(prompt_for(subject) + review(subject, *words))
        rows.append({"text": " ".join(parts)})
    return common.write_jsonl(path, rows)


def model_flops_per_token(config: dict[str, Any], mean_length: float) -> float:
    """6 x matmul parameters (+ the LM head) + causal attention, per trained token."""
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = hidden // heads
    attention = hidden * hidden * 2 + hidden * kv * head_dim * 2  # q, o + k, v
    mlp = 3 * hidden * config["intermediate_size"]
    matmul = layers * (attention + mlp) + hidden * config["vocab_size"]
    return 6 * matmul + 6 * layers * hidden * mean_length


# --- timing hooks (bench code only: the trainers run unmodified) ----------------------------


class StepClock:
    """Times of optimizer steps and the cumulative ``num_tokens`` logged at each step.

    Wraps transformers' CallbackHandler.on_step_end / on_log once per process; every
    Trainer (ours through run_stage, TRL's) reports to the clock that is current.
    """

    current: StepClock | None = None
    _installed = False

    def __init__(self) -> None:
        self.steps: list[tuple[int, float]] = []
        self.tokens: dict[int, float] = {}
        self.losses: dict[int, float] = {}

    def __enter__(self) -> StepClock:
        StepClock.install()
        StepClock.current = self
        return self

    def __exit__(self, *exc: object) -> None:
        StepClock.current = None

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return
        from transformers.trainer_callback import CallbackHandler

        on_step_end, on_log = CallbackHandler.on_step_end, CallbackHandler.on_log

        def step_end(self, args, state, control):  # type: ignore[no-untyped-def]
            if cls.current is not None:
                _synchronize()
                cls.current.steps.append((state.global_step, time.perf_counter()))
            return on_step_end(self, args, state, control)

        def log(self, args, state, control, logs):  # type: ignore[no-untyped-def]
            if cls.current is not None and logs:
                if "num_tokens" in logs:
                    cls.current.tokens[state.global_step] = float(logs["num_tokens"])
                if "loss" in logs:
                    cls.current.losses[state.global_step] = float(logs["loss"])
            return on_log(self, args, state, control, logs)

        CallbackHandler.on_step_end = step_end
        CallbackHandler.on_log = log
        cls._installed = True

    def throughput(self, warmup: int) -> dict[str, float]:
        times = dict(self.steps)
        steps = sorted(s for s in times if s in self.tokens)
        later = [s for s in steps if s >= warmup]
        if len(later) < 2:
            later = steps
        if len(later) < 2:
            return {"tokens_per_second": float("nan"), "step_seconds": float("nan")}
        first, last = later[0], later[-1]
        seconds = times[last] - times[first]
        return {
            "tokens_per_second": (self.tokens[last] - self.tokens[first]) / seconds,
            "step_seconds": seconds / (last - first),
            "tokens_per_step": (self.tokens[last] - self.tokens[first]) / (last - first),
            "timed_steps": float(last - first),
            "final_loss": self.losses.get(max(self.losses), float("nan"))
            if self.losses
            else float("nan"),
        }


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _reset_between_runs() -> None:
    """Free memory and the accelerate singletons between in-process runs."""
    import torch

    try:
        from accelerate.state import AcceleratorState, PartialState

        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    except Exception:
        pass
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# --- one SFT variant -------------------------------------------------------------------------


def run_variant(name: str, setup: dict[str, Any]) -> dict[str, Any]:
    import torch

    variant = VARIANTS[name]
    needs = variant.get("needs")
    if needs and importlib.util.find_spec(needs) is None:
        return {"variant": name, "skipped": f"{needs} is not installed"}
    _reset_between_runs()
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=setup["workdir"]))
    began = time.perf_counter()
    with StepClock() as clock:
        if variant["kind"] == "ours":
            _train_ours(variant, setup, folder)
        else:
            _train_trl(variant, setup, folder)
    result: dict[str, Any] = {"variant": name, "wall_seconds": time.perf_counter() - began}
    result.update(clock.throughput(setup["warmup_steps"]))
    if torch.cuda.is_available():
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    flops = setup["flops_per_token"]
    peak = setup.get("peak_flops")
    result["model_tflops"] = result["tokens_per_second"] * flops / 1e12
    result["mfu"] = result["tokens_per_second"] * flops / peak if peak else float("nan")
    return result


def _train_ours(variant: dict[str, Any], setup: dict[str, Any], folder: Path) -> None:
    from rlhf_trainer import sft
    from rlhf_trainer.lifecycle import run_stage

    manifest = common.job_manifest(
        "SFTJob",
        "gpu-bench",
        {
            "resources": {"gpusPerNode": 0 if setup["device"] == "cpu" else 1},
            "model": common.claim("model"),
            "dataset": {**common.claim("data.jsonl"), "format": "text"},
            "training": {
                "maxSteps": setup["steps"],
                "batchSize": setup["batch"],
                "maxLength": setup["max_length"],
                "learningRate": setup["lr"],
                "loggingSteps": 1,
            },
            "packing": variant["packing"],
            "generation": {"samples": 0},
            "runPolicy": {"checkpointInterval": 10**6},
        },
    )
    config, _ = common.write_trainer_config(
        folder,
        "ours",
        manifest,
        inputs={"model": setup["model"], "dataset": setup["data"]},
        device=setup["device"],
    )
    code = run_stage("sft", config, sft.train)
    if code != 0:
        raise RuntimeError(f"our trainer exited {code}")


def _train_trl(variant: dict[str, Any], setup: dict[str, Any], folder: Path) -> None:
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    arguments: dict[str, Any] = {
        "output_dir": str(folder / "checkpoints"),
        "max_steps": setup["steps"],
        "per_device_train_batch_size": setup["batch"],
        "learning_rate": setup["lr"],
        "max_length": setup["max_length"],
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "seed": 42,
    }
    if setup["device"] == "cpu":
        arguments["use_cpu"] = True
    arguments.update(variant["config"])
    tokenizer = AutoTokenizer.from_pretrained(setup["model"])
    trainer = SFTTrainer(
        model=setup["model"],  # TRL loads it with its own defaults
        args=SFTConfig(**arguments),
        train_dataset=load_dataset("json", data_files=setup["data"], split="train"),
        processing_class=tokenizer,
    )
    trainer.train()
    del trainer


# --- PPO ---------------------------------------------------------------------------------


def run_ppo(setup: dict[str, Any]) -> dict[str, Any]:
    import torch
    from rlhf_trainer.ppo_core import PPOHyperparameters, PPOLoop
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    _reset_between_runs()
    dtype = torch.float32 if setup["device"] == "cpu" else torch.bfloat16
    path = setup["model"]
    tokenizer = AutoTokenizer.from_pretrained(path)

    def classifier() -> Any:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
        model.config.pad_token_id = tokenizer.pad_token_id
        return model

    rng = random.Random(0)
    low, high = setup["ppo_prompt_tokens"]
    special = set(tokenizer.all_special_ids)
    vocabulary = [i for i in range(len(tokenizer)) if i not in special]
    prompts = [
        [rng.choice(vocabulary) for _ in range(rng.randint(low, high))]
        for _ in range(setup["ppo_rollout"] * 4)
    ]
    updates = setup["ppo_updates"]
    marks: list[tuple[int, float, dict[str, float]]] = []
    hyperparameters = PPOHyperparameters(
        total_episodes=setup["ppo_rollout"] * updates,
        rollout_batch_size=setup["ppo_rollout"],
        mini_batches=setup["ppo_mini_batches"],
        epochs=setup["ppo_epochs"],
        learning_rate=1e-6,
        response_length=setup["ppo_response"],
        temperature=1.0,
    )

    def on_log(step: int, total: int, metrics: dict[str, float]) -> None:
        _synchronize()
        marks.append((step, time.perf_counter(), metrics))

    began = time.perf_counter()
    loop = PPOLoop(
        AutoModelForCausalLM.from_pretrained(path, dtype=dtype),
        AutoModelForCausalLM.from_pretrained(path, dtype=dtype),
        classifier(),
        classifier(),
        tokenizer,
        prompts,
        hyperparameters,
        on_log=on_log,
        logging_steps=1,
    )
    loaded = time.perf_counter()
    loop.train()
    result: dict[str, Any] = {
        "variant": "ppo (ppo_core)",
        "load_seconds": loaded - began,
        "train_seconds": time.perf_counter() - loaded,
        "updates": len(marks),
    }
    if len(marks) >= 2:
        seconds = marks[-1][1] - marks[0][1]
        result["episodes_per_second"] = setup["ppo_rollout"] * (len(marks) - 1) / seconds
        result["update_seconds"] = seconds / (len(marks) - 1)
    else:
        result["episodes_per_second"] = setup["ppo_rollout"] * len(marks) / result["train_seconds"]
    if torch.cuda.is_available():
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del loop
    return result


# --- device checklist: distributed strategies ---------------------------------------------

FSDP_LAUNCH = common.ROOT / "tests" / "trainer" / "fsdp_launch.py"


def distributed_check(folder: Path, smoke: bool) -> dict[str, Any]:
    """FSDP2 (and ZeRO-3 when deepspeed is installed): the published model is whole."""
    import torch

    gpus = 0 if smoke else torch.cuda.device_count()
    world_size = min(2, gpus) if gpus else 2
    results: dict[str, Any] = {}
    for strategy in ("fsdp", "deepspeed-zero3"):
        if strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
            results[strategy] = {"skipped": "deepspeed is not installed"}
            continue
        try:
            results[strategy] = _distributed_run(folder, strategy, world_size, smoke)
        except Exception as error:  # report, and check the next strategy
            results[strategy] = {"error": f"{type(error).__name__}: {error}"[:3000]}
    return results


def _distributed_run(folder: Path, strategy: str, world_size: int, smoke: bool) -> dict[str, Any]:
    import socket

    import torch
    import transformers
    from safetensors.torch import load_file
    from trainer.fsdp_launch import trained_weights

    spec = {
        "resources": {"gpusPerNode": world_size},
        "distributed": {"strategy": strategy},
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny", "maxSamples": 64},
        "training": {"maxSteps": 4, "learningRate": 1e-3, "batchSize": 4, "maxLength": 64},
        "generation": {"samples": 2, "maxNewTokens": 8},
        "runPolicy": {"checkpointInterval": 2},
    }
    name = f"distributed-{strategy}"
    config, output = common.write_trainer_config(
        folder,
        name,
        common.job_manifest("SFTJob", name, spec),
        device="cpu" if smoke else "cuda",
    )
    shards = folder / f"{name}-shards"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    extra = {"OMP_NUM_THREADS": "1"}
    if strategy == "fsdp":
        extra["RLHF_TEST_SHARDS"] = str(shards)
    torchrun = Path(sys.executable).with_name("torchrun")
    timed = common.run_timed(
        [
            str(torchrun),
            f"--nproc_per_node={world_size}",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            str(FSDP_LAUNCH),
            "sft",
            "--config",
            str(config),
        ],
        folder / f"{name}.log",
        env=common.offline_env(extra),
        timeout=600,
    )
    result: dict[str, Any] = {"world_size": world_size, "seconds": round(timed.wall, 1)}
    if timed.returncode != 0:
        tail = "\n".join(timed.log.read_text(errors="replace").splitlines()[-30:])
        result["error"] = f"exit {timed.returncode}: {tail[-2500:]}"
        return result
    published = load_file(output / "model" / "model.safetensors")
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        output / "model", output_loading_info=True
    )
    result["missing_keys"] = list(info["missing_keys"]) + list(info["unexpected_keys"])
    result["empty_tensors"] = [n for n, w in model.state_dict().items() if w.numel() == 0]
    samples = (output / "model" / "samples.jsonl").read_text().splitlines()
    result["samples"] = len(samples)
    if strategy == "fsdp":
        trained = trained_weights(shards, world_size)
        result["weights_equal"] = published.keys() == trained.keys() and all(
            torch.equal(published[key], weight) for key, weight in trained.items()
        )
    result["ok"] = (
        not result["missing_keys"]
        and not result["empty_tensors"]
        and result["samples"] == 2
        and result.get("weights_equal", True)
    )
    return result


# --- driver -------------------------------------------------------------------------------


def in_subprocess(kind: str, name: str, setup: dict[str, Any]) -> dict[str, Any]:
    """Run one variant (or the PPO run) in a fresh python, so runs cannot share state."""
    spec = Path(setup["workdir"]) / f"{name}.spec.json"
    out = Path(setup["workdir"]) / f"{name}.result.json"
    spec.write_text(json.dumps({"kind": kind, "name": name, "setup": setup, "out": str(out)}))
    log = Path(setup["workdir"]) / f"{name}.log"
    timed = common.run_timed(
        [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec)],
        log,
        env=common.offline_env(),
        timeout=setup["timeout"],
    )
    if timed.returncode != 0 or not out.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        return {"variant": name, "error": f"exit {timed.returncode}: {tail[-1500:]}"}
    return dict(json.loads(out.read_text()))


def worker(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    if spec["kind"] == "ppo":
        result = run_ppo(spec["setup"])
    else:
        result = run_variant(spec["name"], spec["setup"])
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    for package in ("transformers", "trl", "accelerate", "liger_kernel", "flash_attn", "kernels"):
        found = importlib.util.find_spec(package)
        if found is None:
            info[package] = None
            continue
        try:
            from importlib import metadata

            info[package] = metadata.version(package.replace("_", "-"))
        except Exception:
            info[package] = "installed"
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny config on CPU, in seconds")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--steps", type=int, default=None, help="SFT steps per variant (30)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="untimed steps (5)")
    parser.add_argument("--batch", type=int, default=None, help="rows per step (8)")
    parser.add_argument("--max-length", type=int, default=None, help="tokens (1024)")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--ppo-updates", type=int, default=None, help="(5)")
    parser.add_argument("--ppo-rollout", type=int, default=None, help="prompts per update (64)")
    parser.add_argument("--ppo-response", type=int, default=None, help="response tokens (128)")
    parser.add_argument("--no-ppo", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak")
    parser.add_argument("--in-process", action="store_true", help="no subprocess per variant")
    parser.add_argument(
        "--isolate", action="store_true", help="a subprocess per variant even with --cpu-smoke"
    )
    parser.add_argument("--workdir", help="model, data and run folders (default: temp)")
    parser.add_argument("--json", help="output JSON (default $OUT/gpu_throughput.json)")
    parser.add_argument(
        "--distributed-check",
        action="store_true",
        help="run only the device checklist: FSDP2 (and ZeRO-3 if installed) publish whole",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    if args.distributed_check:
        return _distributed_checklist(args)

    import torch

    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        raise SystemExit("no GPU visible: run with --cpu-smoke, or on the GPU machine")
    shapes = SMOKE if smoke else QWEN2_05B

    def pick(value: Any, gpu: Any, cpu: Any) -> Any:
        return value if value is not None else (cpu if smoke else gpu)

    folder = common.workdir("gpu", args.workdir)
    reviews = (1, 4) if smoke else (5, 90)
    max_length = pick(args.max_length, 1024, 128)
    steps = pick(args.steps, 30, 4)
    batch = pick(args.batch, 8, 4)
    began = time.perf_counter()
    model = build_model(
        folder / ("model-smoke" if smoke else "model-qwen2-0.5b"),
        shapes,
        "float32" if smoke else "bfloat16",
    )
    data = write_text_rows(folder / "data.jsonl", max(256, steps * batch * 4), 0, reviews)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    lengths = [
        min(max_length, len(tokenizer(json.loads(line)["text"])["input_ids"]))
        for line in data.read_text().splitlines()[:200]
    ]
    mean_length = sum(lengths) / len(lengths)
    peak = None
    if not smoke:
        name = torch.cuda.get_device_name(0)
        tflops = args.peak_tflops or next(
            (value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None
        )
        peak = tflops * 1e12 if tflops else None
    elif args.peak_tflops:
        peak = args.peak_tflops * 1e12
    setup: dict[str, Any] = {
        "device": "cpu" if smoke else "cuda",
        "model": str(model),
        "data": str(data),
        "workdir": str(folder),
        "steps": steps,
        "warmup_steps": pick(args.warmup_steps, 5, 1),
        "batch": batch,
        "max_length": max_length,
        "lr": args.lr,
        "mean_length": mean_length,
        "flops_per_token": model_flops_per_token(shapes, mean_length),
        "peak_flops": peak,
        "ppo_updates": pick(args.ppo_updates, 5, 2),
        "ppo_rollout": pick(args.ppo_rollout, 64, 4),
        "ppo_mini_batches": 2 if smoke else 4,
        "ppo_epochs": 1 if smoke else 2,
        "ppo_response": pick(args.ppo_response, 128, 8),
        "ppo_prompt_tokens": (8, 16) if smoke else (64, 128),
        "timeout": 600,
    }
    parameters = sum(p for p in [common.parameter_count(model)])
    print(
        f"{'CPU smoke' if smoke else torch.cuda.get_device_name(0)}: model {parameters / 1e6:.1f}M"
        f" parameters, mean document {mean_length:.0f} tokens (max_length {max_length}),"
        f" {steps} steps x {batch} rows; prepared in {time.perf_counter() - began:.1f}s",
        flush=True,
    )
    isolate = args.isolate or not (smoke or args.in_process)
    results = []
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name}; known: {', '.join(VARIANTS)}")
        t0 = time.perf_counter()
        result = (
            in_subprocess("sft", name, setup) if isolate else _guarded(run_variant, name, setup)
        )
        results.append(result)
        print(f"  {name}: {_line(result)} ({time.perf_counter() - t0:.0f}s)", flush=True)
    ppo = None
    if not args.no_ppo:
        t0 = time.perf_counter()
        ppo = (
            in_subprocess("ppo", "ppo", setup)
            if isolate
            else _guarded(lambda _n, s: run_ppo(s), "ppo", setup)
        )
        print(f"  ppo: {ppo} ({time.perf_counter() - t0:.0f}s)", flush=True)

    baseline = next(
        (r for r in results if r.get("variant") == "trl" and "tokens_per_second" in r), None
    )
    rows = []
    for r in results:
        if "tokens_per_second" not in r:
            rows.append([r["variant"], r.get("skipped") or "error", "", "", "", "", ""])
            continue
        rel = r["tokens_per_second"] / baseline["tokens_per_second"] if baseline else float("nan")
        rows.append(
            [
                r["variant"],
                r["tokens_per_second"],
                r["step_seconds"],
                r.get("tokens_per_step", float("nan")),
                f"{100 * r['mfu']:.1f}%" if r["mfu"] == r["mfu"] else "-",
                f"{rel:.2f}x" if rel == rel else "-",
                r.get("peak_memory_gib", float("nan")),
            ]
        )
    print()
    print(
        common.table(
            ["SFT variant", "tokens/s", "s/step", "tokens/step", "MFU", "vs trl", "peak GiB"], rows
        )
    )
    if ppo and "episodes_per_second" in ppo:
        print(
            f"\nPPO (ppo_core): {ppo['episodes_per_second']:.2f} episodes/s,"
            f" {ppo.get('update_seconds', float('nan')):.2f} s/update (rollout"
            f" {setup['ppo_rollout']}, response {setup['ppo_response']} tokens,"
            f" {setup['ppo_epochs']} epochs x {setup['ppo_mini_batches']} mini-batches)"
        )
    document = {
        "machine": common.machine(),
        "device": device_info(),
        "smoke": smoke,
        "setup": setup,
        "parameters": parameters,
        "sft": results,
        "ppo": ppo,
        "seconds": time.perf_counter() - began,
    }
    out = args.json or (
        os.path.join(os.environ["OUT"], "gpu_throughput.json") if os.environ.get("OUT") else None
    )
    common.save_json(out, document)
    print(f"total {time.perf_counter() - began:.0f}s")
    errors = [r for r in [*results, ppo or {}] if "error" in r]
    return 1 if errors else 0


def _distributed_checklist(args: Any) -> int:
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        raise SystemExit("no GPU visible: run with --cpu-smoke, or on the GPU machine")
    began = time.perf_counter()
    folder = common.workdir("distributed", args.workdir)
    results = distributed_check(folder, args.cpu_smoke)
    for strategy, result in results.items():
        print(f"  {strategy}: {json.dumps(result)}", flush=True)
    out = args.json or (
        os.path.join(os.environ["OUT"], "distributed_check.json") if os.environ.get("OUT") else None
    )
    common.save_json(
        out,
        {
            "machine": common.machine(),
            "device": device_info(),
            "distributed": results,
            "seconds": time.perf_counter() - began,
        },
    )
    return 0 if all(r.get("ok") or "skipped" in r for r in results.values()) else 1


def _guarded(function: Any, name: str, setup: dict[str, Any]) -> dict[str, Any]:
    try:
        return dict(function(name, setup))
    except Exception as error:  # one broken variant must not hide the others
        import traceback

        traceback.print_exc()
        return {"variant": name, "error": f"{type(error).__name__}: {error}"[:1500]}


def _line(result: dict[str, Any]) -> str:
    if "tokens_per_second" in result:
        return (
            f"{result['tokens_per_second']:.0f} tokens/s, {result['step_seconds']:.3f} s/step,"
            f" MFU {100 * result['mfu']:.1f}%"
            if result["mfu"] == result["mfu"]
            else f"{result['tokens_per_second']:.0f} tokens/s, {result['step_seconds']:.3f} s/step"
        )
    return str(result.get("skipped") or result.get("error"))


if __name__ == "__main__":
    sys.exit(main())
