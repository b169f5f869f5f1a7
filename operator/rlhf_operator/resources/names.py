"""Deterministic names and labels of a job's children."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import API_VERSION, TrainingJob, kind_info

MANAGED_BY = "rlhf-operator"


@dataclass(frozen=True)
class ChildNames:
    """Names of everything the operator creates for one job.

    The kind's stage is part of every name, so an SFTJob and a PPOJob may share a name.
    """

    job: str
    config_map: str
    output_claim: str
    service: str
    output_folder: str
    """The job's folder inside its output claim: jobs sharing a claim never meet."""


def child_names(job: TrainingJob) -> ChildNames:
    base = f"{job.metadata.name}-{kind_info(job).stage}"
    return ChildNames(
        job=base,
        config_map=f"{base}-config",
        output_claim=job.spec.output.existing_claim or f"{base}-output",
        service=base,
        output_folder=output_folder(job.metadata.name, kind_info(job).kind),
    )


def output_folder(name: str, kind: str) -> str:
    """Where a job writes inside its output claim, ``<name>-<stage>`` (also the name of its
    folder in local mode): checkpoints/, model/, metrics.json, report.html..."""
    return f"{name}-{kind_info(kind).stage}"


def labels(job: TrainingJob) -> dict[str, str]:
    """Standard labels on every child (and on the pods)."""
    info = kind_info(job)
    return {
        "app.kubernetes.io/name": "rlhf-trainer",
        "app.kubernetes.io/instance": job.metadata.name,
        "app.kubernetes.io/component": info.stage,
        "app.kubernetes.io/part-of": "rlhf-operator",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "rlhf.dev/job": job.metadata.name,
        "rlhf.dev/kind": info.kind,
    }


def owner_reference(job: TrainingJob) -> dict[str, Any]:
    """Makes the job own its children: deleting the job deletes them."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind_info(job).kind,
        "name": job.metadata.name,
        "uid": job.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(job: TrainingJob, name: str, owned: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": job.metadata.namespace,
        "labels": labels(job),
    }
    if owned:
        meta["ownerReferences"] = [owner_reference(job)]
    return meta
