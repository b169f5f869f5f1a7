"""The small children: trainer ConfigMap, output claim, rendezvous Service."""

from __future__ import annotations

import json
from typing import Any

from ..api import TrainingJob
from ..api.trainer_config import TrainerConfig
from ..settings import OperatorSettings
from .names import child_names, labels, metadata

CONFIG_FILE = "config.json"


def config_map(job: TrainingJob, config: TrainerConfig) -> dict[str, Any]:
    """The trainer config as a ConfigMap, mounted at /etc/rlhf in the pods."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(job, child_names(job).config_map),
        "data": {CONFIG_FILE: json.dumps(config.to_manifest(), indent=2, sort_keys=True)},
    }


def output_claim(job: TrainingJob, settings: OperatorSettings) -> dict[str, Any] | None:
    """The output PersistentVolumeClaim, or None when the job writes to an existing claim.

    With ``output.retain`` the claim is not owned by the job, so deleting the job keeps it.
    """
    output = job.spec.output
    if output.existing_claim:
        return None
    spec: dict[str, Any] = {
        "accessModes": list(output.access_modes),
        "resources": {"requests": {"storage": output.size}},
    }
    storage_class = output.storage_class_name or settings.storage_class
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(job, child_names(job).output_claim, owned=not output.retain),
        "spec": spec,
    }


def headless_service(job: TrainingJob) -> dict[str, Any] | None:
    """DNS names for the pods of a multi-node job (rendezvous on the first one)."""
    if job.spec.resources.nodes <= 1:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(job, child_names(job).service),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {
                "rlhf.dev/job": job.metadata.name,
                "rlhf.dev/kind": labels(job)["rlhf.dev/kind"],
            },
            "ports": [
                {"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT}
            ],
        },
    }


RENDEZVOUS_PORT = 29500
