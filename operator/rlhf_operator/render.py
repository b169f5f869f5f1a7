"""``rlhf render``: the trainer config each job's pods would get, without a cluster."""

from __future__ import annotations

import posixpath
from typing import Any

from .api import TrainingJob, kind_info
from .api.trainer_config import FINAL_MODEL_DIR, InputSlot
from .inputs import inputs
from .resources import child_names, pod_trainer_config
from .resources.names import output_folder
from .settings import OperatorSettings


def input_claims(job: TrainingJob, jobs: list[TrainingJob]) -> dict[InputSlot, tuple[str, str]]:
    """Each stored input's claim and path, as the operator mounts them: a user's claim, or
    an earlier job's output claim (its ``existingClaim`` when the files define it, else the
    name the operator gives it)."""
    by_key = {(other.kind, other.metadata.name): other for other in jobs}  # type: ignore[attr-defined]
    claims: dict[InputSlot, tuple[str, str]] = {}
    for needed in inputs(job):
        if needed.claim is not None:
            claims[needed.slot] = (needed.claim, needed.path)
        elif needed.upstream is not None:
            upstream = by_key.get((needed.upstream.kind, needed.upstream.name))
            name = (
                child_names(upstream).output_claim
                if upstream is not None
                else f"{needed.upstream.name}-{kind_info(needed.upstream.kind).stage}-output"
            )
            folder = output_folder(needed.upstream.name, needed.upstream.kind)
            claims[needed.slot] = (name, posixpath.join(folder, FINAL_MODEL_DIR))
    return claims


def rendered_configs(
    jobs: list[TrainingJob], settings: OperatorSettings | None = None
) -> dict[str, dict[str, Any]]:
    """``<name>-<stage>`` -> the config.json the job's pods read."""
    settings = settings or OperatorSettings()
    return {
        child_names(job).job: pod_trainer_config(
            job, input_claims(job, jobs), settings
        ).to_manifest()
        for job in jobs
    }
