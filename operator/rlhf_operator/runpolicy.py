"""How an edit of ``spec.runPolicy`` reaches the running batch Job. Pure.

Every field of runPolicy that may change after creation is applied, so that the job's
``status.observedGeneration`` means "this generation is in effect":

* ``suspend``, ``activeDeadlineSeconds`` (set, changed or removed) and ``backoffLimit``
  (of a one-node job: a multi-node Job's is 0, the operator restarts the group and counts
  against runPolicy.backoffLimit itself, groupfailure.py) are patched onto the Job while
  it runs (the Job API lets all three change), never once
  the job's status is final (a job failed with PodsNotStarted keeps its Job stopped);
  with ``queueName`` Kueue owns the Job's ``suspend`` and the user's goes to the Workload
  (``queueing.py``);
* ``ttlSecondsAfterFinished`` is put on the Job only once the job's status records the
  Job's outcome, so the TTL controller can never delete a finished Job (and its pods'
  exit summaries) before the operator has read it, whether it was busy or down;
* ``checkpointInterval``, ``checkpointIntervalMinutes`` and ``checkpointsToKeep`` are read
  by the trainer from its ConfigMap when it starts, so they are fixed once the job exists
  (the CRD refuses changes: ``api.job.FIXED_RUN_POLICY_FIELDS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .api import TrainingJob
from .ownership import has_finished
from .resources.job import job_backoff_limit

SYNCED_FIELDS = ("suspend", "activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished")
"""The batch Job spec fields the operator keeps in step with runPolicy."""


def job_spec_patch(
    job: TrainingJob,
    batch_job: Mapping[str, Any],
    outcome_recorded: bool,
    seconds_used: int = 0,
) -> dict[str, Any]:
    """The merge patch of the Job's spec that applies the job's runPolicy (empty: none).

    A None value removes the field (JSON merge patch). ``outcome_recorded``: the job's
    status already says Succeeded or Failed. ``seconds_used``: how long the groups a
    multi-node job restarted ran (groupfailure.py): the deadline covers every attempt, so
    this Job gets what is left of it (at least 1 s: a deadline spent fails it at once).
    """
    run_policy = job.spec.run_policy
    current = batch_job.get("spec") or {}
    wanted: dict[str, Any] = {}
    if not outcome_recorded and not has_finished(batch_job):
        # Once the job's status is final its Job is never resumed or changed (a job failed
        # for pods that did not start has its Job stopped, reconcile._stop_unstarted_job).
        # With a queue, Kueue owns suspend: the operator never writes it after creating the
        # Job; the user's suspension goes to the Workload's spec.active (queueing.py).
        if job.spec.queue_name is None and bool(current.get("suspend")) != run_policy.suspend:
            wanted["suspend"] = run_policy.suspend
        deadline = run_policy.active_deadline_seconds
        wanted["activeDeadlineSeconds"] = (
            None if deadline is None else max(1, deadline - seconds_used)
        )
        wanted["backoffLimit"] = job_backoff_limit(job)  # 0 for a group: its retries are ours
    wanted["ttlSecondsAfterFinished"] = (
        run_policy.ttl_seconds_after_finished if outcome_recorded else None
    )
    return {
        key: value for key, value in wanted.items() if key == "suspend" or current.get(key) != value
    }
