"""Operator-wide settings, from environment variables (the Helm chart sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class OperatorSettings:
    """What the operator does when a job's spec leaves something out."""

    trainer_image: str = "ghcr.io/rlhf-operator/trainer:0.1.0"
    """Image of the training pods when a job sets no spec.image."""
    storage_class: str | None = None
    """StorageClass of output claims when a job sets none; the cluster default when unset."""
    gpu_resource_name: str | None = None
    """Overrides the GPU resource name of jobs that keep the default (nvidia.com/gpu)."""
    metrics_port: int = 9090
    """Port the trainer serves /metrics and /progress on."""
    metrics_linger_seconds: float = 20.0
    """How long a finished trainer keeps serving /metrics (a scrape or two at 15 s)."""
    recheck_seconds: float = 5.0
    """How often waiting and running jobs are re-checked (upstreams, progress)."""
    progress_timeout_seconds: float = 2.0
    """How long to wait for a trainer's /progress answer."""
    workers: int = 32
    """Reconciles that may run at once (threads)."""
    namespaces: tuple[str, ...] = field(default_factory=tuple)
    """Namespaces to watch; all when empty."""

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> OperatorSettings:
        env = dict(os.environ if environ is None else environ)
        defaults = cls()
        namespaces = tuple(n for n in env.get("RLHF_NAMESPACES", "").replace(",", " ").split() if n)
        return cls(
            trainer_image=env.get("RLHF_TRAINER_IMAGE", defaults.trainer_image),
            storage_class=env.get("RLHF_STORAGE_CLASS") or None,
            gpu_resource_name=env.get("RLHF_GPU_RESOURCE_NAME") or None,
            metrics_port=int(env.get("RLHF_TRAINER_METRICS_PORT", defaults.metrics_port)),
            recheck_seconds=float(env.get("RLHF_RECHECK_SECONDS", defaults.recheck_seconds)),
            metrics_linger_seconds=float(
                env.get("RLHF_TRAINER_METRICS_LINGER_SECONDS", defaults.metrics_linger_seconds)
            ),
            progress_timeout_seconds=float(
                env.get("RLHF_PROGRESS_TIMEOUT_SECONDS", defaults.progress_timeout_seconds)
            ),
            workers=int(env.get("RLHF_WORKERS", defaults.workers)),
            namespaces=namespaces,
        )
