"""Glue between our spec and transformers' Trainer: arguments, callbacks, resume."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from rlhf_operator.api import Training
from transformers import TrainerCallback

from .checkpointing import CheckpointSchedule, TimedCheckpointCallback
from .lifecycle import Context, Interrupted, latest_checkpoint
from .telemetry import HISTORY_FILE
from .trackers import report_to


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
        "report_to": report_to(context.spec.trackers, context.output_dir)
        if context.spec.trackers
        else "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "use_cpu": context.device == "cpu",
        "bf16": context.precision == "bf16",
        "fp16": context.precision == "fp16",
        "eval_strategy": "no",
    }
    strategy = context.spec.distributed.strategy
    arguments.update(
        distributed_arguments(strategy, gradient_checkpointing=training.gradient_checkpointing)
    )
    if strategy == "fsdp":
        arguments["activation_checkpointing"] = False  # FSDP's own, in fsdp_config
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


def distributed_arguments(strategy: str, *, gradient_checkpointing: bool = False) -> dict[str, Any]:
    """How transformers shards training for each distributed.strategy.

    ddp needs nothing (torchrun + Trainer do it). fsdp is FSDP2 (transformers 5.24 +
    accelerate 1.15): every transformer block (the model's ``_no_split_modules``) is its own
    unit, parameters are resharded after the forward pass (ZeRO-3-like), the model is read
    on rank 0 and broadcast (every rank starts from the same weights, even a freshly
    initialised head), checkpoints and the published model are full state dicts, and
    activation checkpointing is FSDP's own (the Trainer refuses both at once). DeepSpeed
    ZeRO gets a config whose "auto" values transformers fills in from the
    TrainingArguments, and Trainer's own AdamW (no compiled DeepSpeed ops needed); ZeRO-3
    gathers the 16-bit weights when the model is saved.
    """
    if strategy == "fsdp":
        return {
            "fsdp": True,
            "fsdp_config": {
                "version": 2,
                "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                "reshard_after_forward": True,
                "cpu_ram_efficient_loading": True,
                "state_dict_type": "FULL_STATE_DICT",
                "activation_checkpointing": gradient_checkpointing,
            },
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

    run_policy = context.spec.run_policy
    found: list[Any] = [
        TelemetryCallback(context, samples_per_step),
        AgreedStopCallback(context),
        TimedCheckpointCallback(
            CheckpointSchedule(
                run_policy.checkpoint_interval, run_policy.checkpoint_interval_minutes
            )
        ),
    ]
    if early_stopping is not None:
        found.append(
            EarlyStoppingCallback(
                early_stopping_patience=early_stopping.patience,
                early_stopping_threshold=early_stopping.threshold,
            )
        )
    return found


class TelemetryCallback(TrainerCallback):  # type: ignore[misc]
    """Feeds progress and logged figures to Telemetry."""

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

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        logs = dict(logs or {})
        if not any(name.startswith(("eval_", "test_")) for name in logs):
            logs.update(
                self.context.telemetry.record_throughput(
                    logs.get("num_tokens"), state.global_step * self.samples_per_step
                )
            )
        self.context.telemetry.record_metrics(logs, state.global_step)


class AgreedStopCallback(TrainerCallback):  # type: ignore[misc]
    """Honours stop requests (SIGTERM, Ctrl-C) on every rank at the same step.

    A signal reaches one rank (one pod of several) or every rank at slightly different
    times; a rank that stopped alone would save and leave while the others wait in the
    next collective until the timeout. After every optimizer step the ranks all-reduce
    their stop flags (MAX, one number: microseconds next to a step), so all of them see
    the same answer, save the same checkpoint together and stop.
    """

    def __init__(self, context: Context) -> None:
        self.context = context
        self.stopped = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if anyone_stops(self.context.stop.requested, args.device):
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True
            print(
                f"rlhf-trainer: process {self.context.rank} of {self.context.world_size}:"
                f" stopping at step {state.global_step}",
                file=sys.stderr,
                flush=True,
            )


def anyone_stops(mine: bool, device: Any) -> bool:
    """True on every process when any process says True (a no-op without torch.distributed)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return mine
    flag = torch.tensor([1 if mine else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def samples_per_step(context: Context, training: Training) -> int:
    return training.batch_size * training.gradient_accumulation_steps * context.world_size


def train_resumably(context: Context, trainer: Any) -> Any:
    """Train, resuming from the newest complete checkpoint; stop cleanly on request."""
    checkpoint = latest_checkpoint(context.checkpoint_dir)
    _remove_incomplete_checkpoints(context, checkpoint)
    if checkpoint is not None and context.is_main:
        print(f"rlhf-trainer: resuming from {checkpoint.name}", flush=True)
    if context.is_main:  # the curves of a resumed run keep their start
        context.telemetry.keep_history(
            context.output_dir / HISTORY_FILE,
            int(checkpoint.name.split("-")[-1]) if checkpoint is not None else None,
        )
    context.telemetry.set_state("training")
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    # The agreed answer, not this rank's own flag: a signal that lands after the last
    # agreement must not send one rank away while the others publish together.
    if any(getattr(callback, "stopped", False) for callback in trainer.callback_handler.callbacks):
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


def trained_model(context: Context, trainer: Any, *, merge_lora: bool) -> Any | None:
    """The trained model, whole and unsharded, on the main process; None on the others.

    Every process must call it. With fsdp and deepspeed-zero3 each rank holds a shard of
    every weight: the full state dict is gathered collectively (accelerate does it for
    FSDP2 and ZeRO-3; rank 0 receives it), written by rank 0 with the model's own
    save_pretrained and read back as a plain model, which then generates samples and is
    published without any further collective. Otherwise the main process's copy is whole.
    LoRA adapters are merged into the base weights when ``merge_lora``.
    """
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    if not is_sharded(trainer):
        return plain_model(unwrapped, merge_lora) if context.is_main else None
    wrapped = trainer.model_wrapped if trainer.is_deepspeed_enabled else trainer.model
    state_dict = trainer.accelerator.get_state_dict(wrapped)  # collective
    if not context.is_main:
        return None
    model = plain_model(_reloaded(unwrapped, state_dict, context.output_dir), merge_lora)
    return _moved_if_it_fits(model, trainer.args.device)


def is_sharded(trainer: Any) -> bool:
    """Whether the trainer's model is sharded across processes (FSDP, DeepSpeed ZeRO-3)."""
    if trainer.is_fsdp_enabled:
        return True
    if trainer.is_deepspeed_enabled:
        return int(trainer.accelerator.state.deepspeed_plugin.zero_stage) == 3
    return False


def _reloaded(sharded: Any, state_dict: dict[str, Any], scratch: Path) -> Any:
    """A plain model holding ``state_dict``, built the way transformers saves and loads."""
    with tempfile.TemporaryDirectory(prefix=".gathered.", dir=scratch) as folder:
        if not hasattr(sharded, "peft_config"):
            sharded.save_pretrained(folder, state_dict=state_dict)
            return _unwrapped_class(sharded).from_pretrained(folder)
        from peft import PeftModel
        from safetensors.torch import save_file

        # A PeftModel saves only its adapters: the trained base comes from the same
        # gathered state dict, so nothing is read again from the hub or the claim.
        sharded.save_pretrained(Path(folder) / "adapter", state_dict=state_dict)
        base = sharded.get_base_model()
        base.config.save_pretrained(folder)
        if getattr(base, "generation_config", None) is not None:
            base.generation_config.save_pretrained(folder)
        weights = {key: value.contiguous() for key, value in _base_weights(state_dict).items()}
        save_file(weights, str(Path(folder) / "model.safetensors"), metadata={"format": "pt"})
        fresh = _unwrapped_class(base).from_pretrained(folder)
        return PeftModel.from_pretrained(fresh, Path(folder) / "adapter")


def _base_weights(peft_state_dict: dict[str, Any]) -> dict[str, Any]:
    """The base model's own weights in a PeftModel's full state dict, under the base
    model's names: adapters and trained copies of modules_to_save left out."""
    base = {}
    for name, weight in peft_state_dict.items():
        if ".lora_" in name or ".modules_to_save." in name:
            continue
        key = name.removeprefix("base_model.model.")
        base[key.replace(".base_layer.", ".").replace(".original_module.", ".")] = weight
    return base


def _moved_if_it_fits(model: Any, device: Any) -> Any:
    """The whole model on rank 0's accelerator for sample generation, or on the CPU (slow
    but safe) when it does not fit next to that rank's share of the training state."""
    import torch

    try:
        return model.to(device)
    except torch.OutOfMemoryError:
        model.to("cpu")
        torch.cuda.empty_cache()
        print(
            f"rlhf-trainer: the whole model does not fit on {device} next to the training"
            " state; samples are generated on the CPU",
            file=sys.stderr,
            flush=True,
        )
        return model


def _unwrapped_class(model: Any) -> Any:
    """The model's own class: FSDP2 swaps it for a subclass named ``FSDP<class>``."""
    from torch.distributed.fsdp import FSDPModule

    return next(kind for kind in type(model).__mro__ if not issubclass(kind, FSDPModule))


def plain_model(model: Any, merge: bool) -> Any:
    """Unwrap peft: merged into the base weights (what later stages load), or the adapter."""
    if hasattr(model, "merge_and_unload") and merge:
        return model.merge_and_unload()
    return model
