"""Checkpoints of the RL loop: the trained weights (the policy, and the value model when the
estimator has one), the optimizer, every process's RNG states and the step, written to a
temporary folder renamed into place once complete."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import accelerate
import numpy as np
import safetensors.torch
import torch
from torch import nn

CHECKPOINT_PREFIX = "checkpoint-"
TEMPORARY_CHECKPOINT_PREFIX = "tmp-checkpoint-"
TRAINER_STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"


def latest_checkpoint(checkpoint_dir: Path | None) -> Path | None:
    """The ``checkpoint-<step>`` folder with the highest step, or None. Temporary folders
    (a save interrupted before its rename) are ignored."""
    if checkpoint_dir is None or not Path(checkpoint_dir).is_dir():
        return None
    steps = checkpoint_steps(Path(checkpoint_dir))
    return Path(checkpoint_dir) / f"{CHECKPOINT_PREFIX}{max(steps)}" if steps else None


def checkpoint_steps(checkpoint_dir: Path) -> list[int]:
    pattern = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
    steps = []
    for child in checkpoint_dir.iterdir():
        match = pattern.match(child.name)
        if match and child.is_dir() and (child / TRAINER_STATE_FILE).is_file():
            steps.append(int(match.group(1)))
    return sorted(steps)


def save_checkpoint(
    accelerator: accelerate.Accelerator,
    checkpoint_dir: Path,
    step: int,
    models: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    keep: int,
) -> None:
    """Everything a resume needs, into a temporary folder renamed into place once complete,
    so a crash mid-save never leaves a checkpoint that looks valid but is not. Every process
    writes its RNG state; the main process writes the rest (DDP replicas are identical).
    ``models`` by file stem: ``{"policy": ..., "value_model": ...}``."""
    temporary = checkpoint_dir / f"{TEMPORARY_CHECKPOINT_PREFIX}{step}"
    final = checkpoint_dir / f"{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        for leftover in checkpoint_dir.glob(f"{TEMPORARY_CHECKPOINT_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)  # from a save cut short earlier
        temporary.mkdir()
    accelerator.wait_for_everyone()
    torch.save(
        rng_state(accelerator.device),
        temporary / f"rng_state_{accelerator.process_index}.pt",
    )
    if accelerator.is_main_process:
        for stem, model in models.items():
            safetensors.torch.save_model(model, str(temporary / f"{stem}.safetensors"))
        torch.save(optimizer.state_dict(), temporary / OPTIMIZER_FILE)
        (temporary / TRAINER_STATE_FILE).write_text(json.dumps(state, indent=2))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        temporary.rename(final)
        if keep > 0:
            for old_step in checkpoint_steps(checkpoint_dir)[:-keep]:
                shutil.rmtree(checkpoint_dir / f"{CHECKPOINT_PREFIX}{old_step}", ignore_errors=True)
    accelerator.wait_for_everyone()


def load_checkpoint(
    accelerator: accelerate.Accelerator,
    folder: Path,
    models: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    fallback_seed: int,
) -> dict[str, Any]:
    """Restore weights, optimizer and this process's RNG from ``folder``; returns the saved
    trainer state. A process the checkpoint has no RNG state for (resumed with more
    processes) is seeded with ``fallback_seed``."""
    state = json.loads((folder / TRAINER_STATE_FILE).read_text())
    for stem, model in models.items():
        weights = folder / f"{stem}.safetensors"
        if not weights.is_file():
            raise ValueError(
                f"{folder} holds no {stem} weights: it was saved by a run with another"
                " advantage estimator; resume with that estimator or start afresh"
            )
        # Read to CPU; load_state_dict copies into the parameters wherever they live.
        safetensors.torch.load_model(model, str(weights), device="cpu")
    optimizer.load_state_dict(
        torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    )
    rng_file = folder / f"rng_state_{accelerator.process_index}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=True), accelerator.device)
    else:
        accelerate.utils.set_seed(fallback_seed)
    accelerator.wait_for_everyone()
    return state


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG the loop can draw from (on this process's accelerator only: touching the
    others would open a CUDA context on every GPU), in types ``torch.load(weights_only=True)``
    accepts."""
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [
            numpy_state[0],
            torch.from_numpy(numpy_state[1].astype(np.int64)),
            *numpy_state[2:],
        ],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
