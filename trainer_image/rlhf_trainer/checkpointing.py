"""When to save a checkpoint: every ``checkpointInterval`` steps, or once
``checkpointIntervalMinutes`` have passed since the last save, whichever comes first.

Counted the same way in every stage; a "step" is an optimizer step for SFT and reward
models (transformers' Trainer: this module's callback adds the time condition to its own
``save_steps``) and a PPO update, one rollout batch, for PPO (ppo_core's loop asks
``CheckpointSchedule.due`` after each update).

Clocks differ between processes, so the time condition is agreed across ranks (any rank
due means every rank saves): a save is collective, and a rank that saved alone would
leave the others waiting in the next all-reduce.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

Agreement = Callable[[bool], bool]


def time_due(seconds_since_save: float, every_minutes: float) -> bool:
    """Have ``every_minutes`` passed since the last save? 0 turns the time condition off."""
    return every_minutes > 0 and seconds_since_save >= every_minutes * 60


def any_rank(flag: bool) -> bool:
    """True when the flag is set on any process (one tiny all-reduce when distributed)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


class CheckpointSchedule:
    """The clock since the last save, and the decision to save at a step."""

    def __init__(
        self,
        every_steps: int,
        every_minutes: float,
        clock: Callable[[], float] = time.monotonic,
        agree: Agreement = any_rank,
    ) -> None:
        self.every_steps = every_steps
        self.every_minutes = every_minutes
        self.clock = clock
        self.agree = agree
        self.last_save = clock()

    def seconds_since_save(self) -> float:
        return self.clock() - self.last_save

    def due(self, step: int) -> bool:
        """Save at this step? Every rank must call it at every step (the time condition is
        agreed across ranks, the step condition is the same everywhere)."""
        if self.every_steps > 0 and step % self.every_steps == 0:
            return True
        return self.time_due()

    def time_due(self) -> bool:
        """The time condition alone, agreed across ranks (when it is on)."""
        if self.every_minutes <= 0:
            return False
        return self.agree(time_due(self.seconds_since_save(), self.every_minutes))

    def saved(self) -> None:
        self.last_save = self.clock()


class TimedCheckpointCallback(TrainerCallback):  # type: ignore[misc]
    """Adds the time condition to transformers' step-based saving (save_steps)."""

    def __init__(self, schedule: CheckpointSchedule) -> None:
        self.schedule = schedule

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.schedule.time_due():
            control.should_save = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.schedule.saved()
