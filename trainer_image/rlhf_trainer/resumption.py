"""Whether the checkpoints in a job's output folder may be resumed: only by the spec that
made them.

A job deleted and re-created with the same name (the documented way to change a fixed
field) finds the checkpoints of its earlier run when its output claim was kept
(``output.retain``, ``existingClaim``). Each run records what it trains in
``checkpoints/spec.json``: the part of the spec that determines the results (the same
``determining_spec`` local mode uses to decide whether a stage must run again, so a
``runPolicy`` edit, more nodes or another image still resume) plus the distributed strategy
(its checkpoints are laid out differently). Checkpoints made with another spec, or before
checkpoints recorded theirs, are removed and training starts fresh, with one line saying
so: the spec they were made with no longer exists anywhere, and resuming it would train
something nobody asked for.

Rank 0 decides and clears the folder; every other rank waits until the folder records its
own spec, so no rank lists checkpoints that rank 0 is about to remove.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhf_operator.local.fingerprint import changes, determining_spec

from .errors import TransientError

SPEC_FILE = "spec.json"
"""In the checkpoints folder: the spec its checkpoints were made with."""
WAIT_SECONDS = 600.0
"""How long a rank other than 0 waits for rank 0 to prepare the checkpoints folder."""


def checkpoint_spec(job: Any) -> dict[str, Any]:
    """What a checkpoint records of the job: kind, determining spec, distributed strategy."""
    return {
        "kind": job.kind,
        "spec": determining_spec(job),
        "distributed": job.spec.distributed.to_manifest(),
    }


def recorded_spec(checkpoint_dir: Path) -> dict[str, Any] | None:
    try:
        document = json.loads((checkpoint_dir / SPEC_FILE).read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def holds_checkpoints(checkpoint_dir: Path) -> bool:
    return checkpoint_dir.is_dir() and any(
        path.name.startswith(("checkpoint-", "tmp-checkpoint-"))
        for path in checkpoint_dir.iterdir()
    )


def why_not_resumable(checkpoint_dir: Path, wanted: dict[str, Any]) -> str | None:
    """None when the folder may be resumed (or holds nothing); else why not, in words."""
    if not holds_checkpoints(checkpoint_dir):
        return None
    recorded = recorded_spec(checkpoint_dir)
    if recorded is None:
        return "they do not record the spec they were made with"
    if recorded == wanted:
        return None
    found = changes(_as_fingerprint(recorded), _as_fingerprint(wanted))
    if recorded.get("kind") != wanted.get("kind"):
        found.insert(0, f"kind: {recorded.get('kind')} -> {wanted.get('kind')}")
    if recorded.get("distributed") != wanted.get("distributed"):
        found.append("spec.distributed changed")
    return "they were made with another spec (" + "; ".join(found or ["it differs"]) + ")"


def prepare_checkpoints(
    checkpoint_dir: Path,
    job: Any,
    is_main: bool,
    *,
    wait_seconds: float = WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Leave ``checkpoint_dir`` holding only checkpoints this job's spec may resume, and
    recording that spec. Called by every rank before anything lists checkpoints."""
    wanted = checkpoint_spec(job)
    if not is_main:
        deadline = time.monotonic() + wait_seconds
        while recorded_spec(checkpoint_dir) != wanted:
            if time.monotonic() > deadline:
                raise TransientError(
                    f"rank 0 did not prepare {checkpoint_dir} within {wait_seconds:.0f} s"
                )
            sleep(0.2)
        return
    reason = why_not_resumable(checkpoint_dir, wanted)
    if reason is not None:
        print(
            f"rlhf-trainer: not resuming the checkpoints in {checkpoint_dir}: {reason};"
            " removing them and training from the start",
            file=sys.stderr,
            flush=True,
        )
        # One rename makes the switch atomic; the old folder is removed after it.
        superseded = checkpoint_dir.with_name(f".{checkpoint_dir.name}-superseded-{os.getpid()}")
        os.rename(checkpoint_dir, superseded)
        shutil.rmtree(superseded, ignore_errors=True)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    if recorded_spec(checkpoint_dir) != wanted:
        temporary = checkpoint_dir / f".{SPEC_FILE}.tmp"
        temporary.write_text(json.dumps(wanted, indent=2, sort_keys=True))
        os.replace(temporary, checkpoint_dir / SPEC_FILE)


def _as_fingerprint(recorded: dict[str, Any]) -> dict[str, Any]:
    return {"spec": recorded.get("spec") or {}, "inputs": {}}
