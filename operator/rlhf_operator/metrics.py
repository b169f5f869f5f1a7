"""The operator's own Prometheus metrics."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .api import KINDS, PHASES

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

_phases: dict[tuple[str, str, str], tuple[str, str]] = {}
_lock = threading.Lock()


def record_phase(kind: str, namespace: str, name: str, phase: str | None) -> None:
    """Remember a job's phase (None: deleted) and refresh the per-phase gauge."""
    with _lock:
        if phase is None:
            _phases.pop((kind, namespace, name), None)
        else:
            _phases[(kind, namespace, name)] = (kind, phase)
        counts = {(info.kind, phase): 0 for info in KINDS for phase in PHASES}
        for key in _phases.values():
            counts[key] = counts.get(key, 0) + 1
        for (job_kind, job_phase), count in counts.items():
            JOBS.labels(kind=job_kind, phase=job_phase).set(count)


for _info in KINDS:
    # Series exist from the start (at 0), so rate() and increase() see the first error.
    RECONCILE_ERRORS.labels(kind=_info.kind)
