"""What every stage does around its training: read the config, pick the device and
precision, serve telemetry, stop cleanly on SIGTERM / Ctrl-C, publish the finished model
atomically, and report how it ended (exit code, metrics.json, termination message, report).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rlhf_operator.api import field_errors
from rlhf_operator.api.trainer_config import FINAL_MODEL_DIR, TrainerConfig

from .errors import ConfigError, TransientError, UserError
from .resumption import prepare_checkpoints
from .telemetry import Telemetry, write_summary, write_termination_message

EXIT_INTERRUPTED = 143
"""Stopped by SIGTERM or Ctrl-C after saving a checkpoint: retried, never counted done."""
STAGE_KINDS = {"sft": "SFTJob", "rm": "RewardModelJob", "ppo": "PPOJob", "dpo": "DPOJob"}


@dataclass
class StageResult:
    """What a stage hands back: figures for status, and extra files for the report."""

    metrics: dict[str, float]
    key_metric: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """Everything a stage needs besides its spec."""

    config: TrainerConfig
    output_dir: Path
    telemetry: Telemetry
    device: str
    precision: str
    rank: int
    local_rank: int
    world_size: int
    stop: StopRequest

    @property
    def spec(self) -> Any:
        return self.config.job.spec

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    @property
    def final_model_dir(self) -> Path:
        return self.output_dir / FINAL_MODEL_DIR

    def torch_dtype(self) -> Any:
        """The dtype of frozen models (reference policy, reward model): bf16 on GPUs."""
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision, torch.float32)

    def master_dtype(self) -> Any:
        """The dtype of weights being trained: always fp32.

        Mixed precision computes in bf16 (autocast) but keeps fp32 weights: a bf16 weight
        cannot absorb an update as small as lr 2e-5 times a gradient, so most would never
        move.
        """
        import torch

        return torch.float32


class StopRequest:
    """Set by SIGTERM (eviction, suspension, preemption) or Ctrl-C.

    Training loops check it after each step, save a checkpoint and stop; the process then
    exits with EXIT_INTERRUPTED so the next attempt resumes. A second signal exits at once.
    """

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        self._previous = {
            signum: signal.signal(signum, self._handle)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }

    def uninstall(self) -> None:
        for signum, handler in getattr(self, "_previous", {}).items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise SystemExit(EXIT_INTERRUPTED)
        self.requested = True
        print(
            f"rlhf-trainer: {signal.Signals(signum).name}: saving a checkpoint and stopping",
            file=sys.stderr,
            flush=True,
        )


class Interrupted(Exception):
    """Training stopped on request after checkpointing."""


def load_config(path: Path) -> TrainerConfig:
    try:
        document = json.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read the config: {error.strerror}", where=str(path)) from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"not JSON: {error}", where=str(path)) from None
    try:
        return TrainerConfig.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(str(problem) for problem in field_errors(error))
        raise ConfigError(problems, where=str(path)) from None


def choose_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was requested but no GPU is visible", field="device")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def choose_precision(requested: str, device: str) -> str:
    """bf16 on GPUs that have it; fp32 on CPU, where bf16 is about twice as slow."""
    import torch

    if requested != "auto":
        if device == "cpu" and requested == "fp16":
            raise ConfigError("fp16 needs a GPU; use fp32 or bf16", field="spec.training.precision")
        return requested
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (every device), the same on every rank.

    Called before any model is built or loaded (and again by models.py right before each
    load, since building the tiny preset reseeds torch): a new classification or score
    head and LoRA weights then start the same on every run and every rank.
    """
    from transformers import set_seed

    set_seed(seed)


def run_stage(stage: str, config_path: Path, train: Callable[[Context], StageResult]) -> int:
    """Run one stage end to end and return the process exit code."""
    started = time.time()
    termination_path: str | None = "/dev/termination-log"
    telemetry: Telemetry | None = None
    stop = StopRequest()
    try:
        config = load_config(config_path)
        termination_path = config.telemetry.termination_message_path
        if config.job.kind != STAGE_KINDS[stage]:
            raise ConfigError(
                f"stage {stage} runs {STAGE_KINDS[stage]},"
                f" but the config holds a {config.job.kind}",
                where=str(config_path),
                field="job.kind",
            )
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        device = choose_device(config.device)
        if world_size > 1:
            print(f"rlhf-trainer: rank {rank} of world size {world_size} on {device}", flush=True)
        telemetry = Telemetry(
            config.job.metadata.namespace or "default",
            config.job.metadata.name,
            config.job.kind,
            stage=stage,
            serve=local_rank == 0,
        )
        stop.install()
        context = Context(
            config=config,
            output_dir=Path(config.paths.output),
            telemetry=telemetry,
            device=device,
            precision=choose_precision(config.job.spec.training.precision, device),
            rank=rank,
            local_rank=local_rank,
            world_size=world_size,
            stop=stop,
        )
        context.output_dir.mkdir(parents=True, exist_ok=True)
        prepare_checkpoints(context.checkpoint_dir, config.job, context.is_main)
        seed_everything(config.job.spec.training.seed)
        telemetry.start(config.telemetry.metrics_host, config.telemetry.metrics_port)
        if telemetry.address and context.is_main:
            print(f"rlhf-trainer: metrics and progress at {telemetry.address}", flush=True)
        result = train(context)
        telemetry.set_state("done")
        if context.is_main:
            summary = {
                "phase": "Succeeded",
                "kind": config.job.kind,
                "keyMetric": result.key_metric,
                "metrics": result.metrics,
                "output": FINAL_MODEL_DIR,
                "seconds": round(time.time() - started, 1),
                "steps": telemetry.step,
                "worldSize": context.world_size,
                "device": context.device,
                "precision": context.precision,
            }
            write_summary(context.output_dir, summary, telemetry.history, termination_path)
            from .report import write_report

            write_report(context.output_dir, config, summary, telemetry.history, result.details)
        if telemetry.address and config.telemetry.linger_seconds:
            time.sleep(config.telemetry.linger_seconds)
        return 0
    except (UserError, TransientError) as error:
        print(f"rlhf-trainer: error: {error}", file=sys.stderr, flush=True)
        if termination_path:
            write_termination_message(
                termination_path,
                {"phase": "Failed", "reason": type(error).__name__, "message": str(error)[:3000]},
            )
        return error.exit_code
    except Interrupted:
        print("rlhf-trainer: stopped after saving a checkpoint; rerun to resume", file=sys.stderr)
        if telemetry is not None and context.is_main:  # the curves so far, at the same link
            _report_interrupted(context, telemetry, round(time.time() - started, 1))
        return EXIT_INTERRUPTED
    except Exception as error:
        traceback.print_exc()
        if termination_path:
            write_termination_message(
                termination_path,
                {
                    "phase": "Failed",
                    "reason": "TrainerCrashed",
                    "message": f"{type(error).__name__}: {error}"[:3000],
                },
            )
        return 1
    finally:
        stop.uninstall()
        if telemetry is not None:
            telemetry.stop()


def _report_interrupted(context: Context, telemetry: Telemetry, seconds: float) -> None:
    """report.html with the curves so far; a report that cannot be written must not turn
    a clean stop (retried) into a crash."""
    from .report import write_report

    interrupted = {
        "phase": "Interrupted",
        "seconds": seconds,
        "steps": telemetry.step,
        "note": "Stopped after saving a checkpoint: run it again to resume.",
    }
    try:
        write_report(context.output_dir, context.config, interrupted, telemetry.history, {})
    except Exception as error:
        print(f"rlhf-trainer: no report for the interrupted run: {error}", file=sys.stderr)


def publish_model(output_dir: Path, save: Callable[[Path], None]) -> Path:
    """Save the finished model into a temporary folder, then rename it into place.

    A crash mid-save leaves only a temporary folder, never a half-written ``model/``
    that a downstream job would take for a finished model.
    """
    final = output_dir / FINAL_MODEL_DIR
    staging = Path(tempfile.mkdtemp(prefix=f".{FINAL_MODEL_DIR}.", dir=output_dir))
    save(staging)
    (staging / "COMPLETE").write_text(json.dumps({"saved": time.time()}))
    readable_by_all(staging)
    if final.exists():
        shutil.rmtree(final)
    os.rename(staging, final)
    return final


def readable_by_all(folder: Path) -> None:
    """Folders 0755 and files 0644, as model registries and serving pods (another uid)
    expect: mkdtemp makes 0700 folders, and some writers make 0600 files."""
    folder.chmod(0o755)
    for root, folders, files in os.walk(folder):
        for name in folders:
            (Path(root) / name).chmod(0o755)
        for name in files:
            (Path(root) / name).chmod(0o644)


def publish_pretrained(
    context: Context,
    model: Any,
    tokenizer: Any,
    files: dict[str, list[dict[str, Any]]] | None = None,
) -> Path:
    """Publish a transformers model with its tokenizer (and JSONL files travelling with it)."""

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        for name, rows in (files or {}).items():
            (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))

    context.telemetry.set_state("saving")
    return publish_model(context.output_dir, save)


def latest_checkpoint(
    checkpoint_dir: Path, complete_marker: str = "trainer_state.json"
) -> Path | None:
    """The newest complete ``checkpoint-<step>`` folder, if any.

    transformers writes its checkpoints in place and the trainer state last, so a folder
    without that file is a save that was cut short: it is skipped.
    """
    if not checkpoint_dir.is_dir():
        return None
    found = [
        path
        for path in checkpoint_dir.iterdir()
        if path.is_dir()
        and path.name.startswith("checkpoint-")
        and path.name[11:].isdigit()
        and (path / complete_marker).exists()
    ]
    return max(found, key=lambda path: int(path.name[11:]), default=None)
