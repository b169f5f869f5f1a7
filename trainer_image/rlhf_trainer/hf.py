"""Glue between our spec and transformers' Trainer: arguments, callbacks, resume."""

from __future__ import annotations

import shutil
from typing import Any

from rlhf_operator.api import Training
from transformers import TrainerCallback

from .lifecycle import Context, Interrupted, latest_checkpoint


def training_arguments(
    context: Context,
    training: Training,
    *,
    has_eval: bool,
    early_stopping: Any | None = None,
    greater_is_better: bool | None = None,
) -> dict[str, Any]:
    """Keyword arguments shared by TrainingArguments, SFTConfig and RewardConfig."""
    run_policy = context.spec.run_policy
    eval_steps = training.eval_steps or run_policy.checkpoint_interval
    save_steps = run_policy.checkpoint_interval
    arguments: dict[str, Any] = {
        "output_dir": str(context.checkpoint_dir),
        "num_train_epochs": training.epochs,
        "max_steps": training.max_steps or -1,
        "learning_rate": training.learning_rate,
        "lr_scheduler_type": training.lr_scheduler,
        "warmup_steps": training.warmup_ratio,  # a float below 1 is a ratio of all steps
        "weight_decay": training.weight_decay,
        "per_device_train_batch_size": training.batch_size,
        "per_device_eval_batch_size": training.batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "max_grad_norm": training.max_grad_norm,
        "activation_checkpointing": training.gradient_checkpointing,
        "logging_steps": training.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": save_steps,
        "save_total_limit": run_policy.checkpoints_to_keep,
        "seed": training.seed,
        "data_seed": training.seed,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "use_cpu": context.device == "cpu",
        "bf16": context.precision == "bf16",
        "fp16": context.precision == "fp16",
        "eval_strategy": "no",
    }
    arguments.update(distributed_arguments(context.spec.distributed.strategy))
    if has_eval:
        arguments["eval_strategy"] = "steps"
        arguments["eval_steps"] = eval_steps
    if early_stopping is not None:
        # The best checkpoint must be one that was evaluated: save whenever we evaluate.
        arguments["save_steps"] = eval_steps
        arguments["load_best_model_at_end"] = True
        arguments["metric_for_best_model"] = early_stopping.metric
        arguments["greater_is_better"] = greater_is_better
        arguments["save_total_limit"] = max(2, run_policy.checkpoints_to_keep)
    return arguments


def distributed_arguments(strategy: str) -> dict[str, Any]:
    """How transformers shards training for each distributed.strategy.

    ddp needs nothing (torchrun + Trainer do it). fsdp shards every transformer block;
    DeepSpeed ZeRO gets a config whose "auto" values transformers fills in from the
    TrainingArguments, and Trainer's own AdamW (no compiled DeepSpeed ops needed).
    """
    if strategy == "fsdp":
        return {
            "fsdp": "full_shard auto_wrap",
            "fsdp_config": {"use_orig_params": True, "sync_module_states": True},
        }
    if strategy.startswith("deepspeed-zero"):
        stage = int(strategy[-1])
        zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
        if stage == 3:
            zero["stage3_gather_16bit_weights_on_model_save"] = True
        return {
            "deepspeed": {
                "zero_optimization": zero,
                "bf16": {"enabled": "auto"},
                "fp16": {"enabled": "auto"},
                "train_micro_batch_size_per_gpu": "auto",
                "gradient_accumulation_steps": "auto",
                "gradient_clipping": "auto",
            }
        }
    return {}


def callbacks(context: Context, early_stopping: Any | None, samples_per_step: int) -> list[Any]:
    from transformers import EarlyStoppingCallback

    found: list[Any] = [TelemetryCallback(context, samples_per_step)]
    if early_stopping is not None:
        found.append(
            EarlyStoppingCallback(
                early_stopping_patience=early_stopping.patience,
                early_stopping_threshold=early_stopping.threshold,
            )
        )
    return found


class TelemetryCallback(TrainerCallback):  # type: ignore[misc]
    """Feeds progress and logged figures to Telemetry; honours stop requests."""

    def __init__(self, context: Context, samples_per_step: int) -> None:
        self.context = context
        self.samples_per_step = samples_per_step

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.context.telemetry.set_total(state.max_steps)
        # Counters count this process's work: TRL's num_tokens restarts at 0, samples follow
        # the (resumed) step.
        self.context.telemetry.start_counting(
            state.global_step, 0.0, state.global_step * self.samples_per_step
        )
        self.context.telemetry.record_step(state.global_step, state.epoch)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.context.telemetry.record_step(state.global_step, state.epoch)
        if self.context.stop.requested:
            control.should_save = True
            control.should_training_stop = True

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        logs = dict(logs or {})
        if not any(name.startswith("eval_") for name in logs):
            logs.update(
                self.context.telemetry.record_throughput(
                    logs.get("num_tokens"), state.global_step * self.samples_per_step
                )
            )
        self.context.telemetry.record_metrics(logs, state.global_step)


def samples_per_step(context: Context, training: Training) -> int:
    return training.batch_size * training.gradient_accumulation_steps * context.world_size


def train_resumably(context: Context, trainer: Any) -> Any:
    """Train, resuming from the newest complete checkpoint; stop cleanly on request."""
    checkpoint = latest_checkpoint(context.checkpoint_dir)
    _remove_incomplete_checkpoints(context, checkpoint)
    if checkpoint is not None and context.is_main:
        print(f"rlhf-trainer: resuming from {checkpoint.name}", flush=True)
    context.telemetry.set_state("training")
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if context.stop.requested:
        raise Interrupted()
    return result


def _remove_incomplete_checkpoints(context: Context, keep: Any) -> None:
    if not context.is_main or not context.checkpoint_dir.is_dir():
        return
    for path in context.checkpoint_dir.glob("checkpoint-*"):
        if path.is_dir() and not (path / "trainer_state.json").exists():
            shutil.rmtree(path, ignore_errors=True)


def lora_config(lora: Any, task_type: str) -> Any:
    from peft import LoraConfig

    targets: Any = lora.target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        task_type=task_type,
    )


def plain_model(model: Any, merge: bool) -> Any:
    """Unwrap peft: merged into the base weights (what later stages load), or the adapter."""
    if hasattr(model, "merge_and_unload") and merge:
        return model.merge_and_unload()
    return model
