"""What a reconcile reads from the operator's watch caches, built for unit tests: the batch
Job and pods of one training job's Job, trimmed as the cache trims them."""

from __future__ import annotations

from typing import Any

from rlhf_operator import cache
from rlhf_operator.api import KINDS_BY_NAME


def one_job_view(
    namespace: str,
    job_name: str,
    batch_job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
) -> cache.ClusterView:
    """The cache holding ``batch_job`` (None: the watch has not seen it, or it is gone) and
    ``pods`` under the Job name ``job_name``; no training jobs, dependents or Workloads."""
    batch_jobs = {(namespace, job_name): [cache.trim_batch_job(batch_job)]} if batch_job else {}
    found = {(namespace, job_name): [cache.trim_pod(pod) for pod in pods]} if pods else {}
    empty: dict[Any, list[Any]] = {}
    return cache.ClusterView(
        batch_jobs=batch_jobs,
        pods=found,
        training_jobs={kind: empty for kind in KINDS_BY_NAME},
        dependents_by_kind={kind: empty for kind in KINDS_BY_NAME},
    )
