"""Which spec fields point at data or models on storage, and where the trainer finds them.

Shared by the operator (which mounts claims at /inputs/<field>) and local mode (which
maps them to folders): both render the trainer config through ``trainer_config``, so
a pod and a laptop read the same config with only the paths differing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .api import DatasetSource, TrainingJob
from .api.trainer_config import (
    FINAL_MODEL_DIR,
    InputSlot,
    TrainerConfig,
    TrainerPaths,
    TrainerTelemetry,
)

MODEL_SLOTS: dict[str, tuple[InputSlot, ...]] = {
    "SFTJob": ("model",),
    "RewardModelJob": ("model",),
    "PPOJob": ("policy", "rewardModel", "valueModel"),
    "DPOJob": ("policy", "rewardModel"),
}


@dataclass(frozen=True)
class Upstream:
    """An earlier job this one reads from."""

    kind: str
    name: str


@dataclass(frozen=True)
class Input:
    """One spec field whose source lives on storage.

    ``claim`` is set for a user's PersistentVolumeClaim; ``upstream`` for an earlier
    job's output (its claim is known once that job has run). ``path`` is relative to the
    claim's root.
    """

    slot: InputSlot
    path: str
    claim: str | None = None
    upstream: Upstream | None = None


def sources(job: TrainingJob) -> list[tuple[InputSlot, Any]]:
    """Every source field that is set, by slot name (YAML spelling)."""
    spec = job.spec
    found: list[tuple[InputSlot, Any]] = []
    for slot in MODEL_SLOTS[job.kind]:  # type: ignore[attr-defined]
        source = getattr(spec, _snake(slot))
        if source is not None:
            found.append((slot, source))
    found.append(("dataset", spec.dataset))  # type: ignore[attr-defined]
    return found


def inputs(job: TrainingJob) -> list[Input]:
    """The sources that need storage mounted: claims and earlier jobs' outputs."""
    needed = []
    for slot, source in sources(job):
        if source.pvc is not None:
            needed.append(Input(slot, source.pvc.path, claim=source.pvc.claim_name))
        elif not isinstance(source, DatasetSource) and source.from_job is not None:
            reference = source.from_job
            needed.append(
                Input(slot, FINAL_MODEL_DIR, upstream=Upstream(reference.kind, reference.name))
            )
    return needed


def upstreams(job: TrainingJob) -> list[Upstream]:
    """Earlier jobs this one waits for, each once, in spec order."""
    seen: list[Upstream] = []
    for needed in inputs(job):
        if needed.upstream is not None and needed.upstream not in seen:
            seen.append(needed.upstream)
    return seen


def trainer_config(
    job: TrainingJob,
    *,
    input_paths: dict[InputSlot, str],
    output: str,
    metrics_port: int,
    metrics_host: str = "0.0.0.0",
    termination_message_path: str | None = None,
    cache: str | None = None,
    hub_cache: str | None = None,
    hub_cache_read_only: bool = False,
    device: str = "auto",
    linger_seconds: float = 0.0,
) -> TrainerConfig:
    """The config every trainer process reads (pure: the same job gives the same config)."""
    manifest = job.to_manifest()
    manifest.pop("status", None)
    metadata = manifest["metadata"]
    manifest["metadata"] = {
        key: metadata[key] for key in ("name", "namespace", "labels") if metadata.get(key)
    }
    telemetry: dict[str, Any] = {"metrics_host": metrics_host, "metrics_port": metrics_port}
    telemetry["termination_message_path"] = termination_message_path
    telemetry["linger_seconds"] = linger_seconds
    return TrainerConfig(
        job=manifest,  # type: ignore[arg-type]
        paths=TrainerPaths(
            output=output,
            inputs=input_paths,
            cache=cache,
            hub_cache=hub_cache,
            hub_cache_read_only=hub_cache_read_only,
        ),
        telemetry=TrainerTelemetry(**telemetry),
        device=device,  # type: ignore[arg-type]
    )


def _snake(slot: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in slot)
