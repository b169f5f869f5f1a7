"""The operator's own Prometheus metrics."""

from __future__ import annotations

import threading

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from .api import KINDS, PHASES

# No NAME_created series next to counters and histograms (docs/metrics.md).
disable_created_metrics()

REGISTRY = CollectorRegistry()

JOBS = Gauge(
    "rlhf_operator_jobs",
    "Jobs the operator knows, by kind and phase.",
    ("kind", "phase"),
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "rlhf_operator_reconcile_duration_seconds",
    "Time to reconcile one job (read the world, create children, write status).",
    ("kind",),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "rlhf_operator_reconcile_errors",
    "Reconciles that failed and will be retried.",
    ("kind",),
    registry=REGISTRY,
)
JOB_SECONDS = Histogram(
    "rlhf_operator_job_duration_seconds",
    "Wall time from start to the end of training, by kind and outcome.",
    ("kind", "phase"),
    buckets=(10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200),
    registry=REGISTRY,
)
FAILURES = Counter(
    "rlhf_operator_job_failures",
    "Jobs that failed, by kind and reason.",
    ("kind", "reason"),
    registry=REGISTRY,
)
JOB_CREATE_SECONDS = Histogram(
    "rlhf_operator_job_creation_latency_seconds",
    "From the job's creation to its batch Job being created.",
    ("kind",),
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
    registry=REGISTRY,
)

_phases: dict[tuple[str, str, str], str] = {}
_lock = threading.Lock()


def record_phase(kind: str, namespace: str, name: str, phase: str | None) -> None:
    """Remember a job's phase (None: deleted) and move it between the per-phase counts."""
    key = (kind, namespace, name)
    with _lock:
        old = _phases.pop(key, None)
        if phase is not None:
            _phases[key] = phase
        if old == phase:
            return
        if old is not None:
            JOBS.labels(kind=kind, phase=old).dec()
        if phase is not None:
            JOBS.labels(kind=kind, phase=phase).inc()


for _info in KINDS:
    # Series exist from the start (at 0): rate() sees the first error, panels show zeros.
    RECONCILE_ERRORS.labels(kind=_info.kind)
    for _phase in PHASES:
        JOBS.labels(kind=_info.kind, phase=_phase)
