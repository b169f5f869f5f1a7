"""The trainer config of a job's pods (what its ConfigMap holds)."""

from __future__ import annotations

import posixpath

from ..api import TrainingJob
from ..api.trainer_config import (
    MODEL_CACHE_DIR,
    OUTPUT_DIR,
    TERMINATION_MESSAGE_PATH,
    InputSlot,
    TrainerConfig,
)
from ..inputs import trainer_config
from ..settings import OperatorSettings
from .job import input_paths
from .names import child_names


def pod_trainer_config(
    job: TrainingJob,
    input_claims: dict[InputSlot, tuple[str, str]],
    settings: OperatorSettings,
) -> TrainerConfig:
    """The config a training pod reads: inputs at /inputs/<slot>, output in the job's own
    folder of its claim (mounted at /output), the termination message and the scratch
    cache where the pod spec mounts them."""
    model_cache = job.spec.model_cache
    return trainer_config(
        job,
        input_paths=input_paths(input_claims),
        output=posixpath.join(OUTPUT_DIR, child_names(job).output_folder),
        metrics_port=settings.metrics_port,
        termination_message_path=TERMINATION_MESSAGE_PATH,
        cache="/cache",
        hub_cache=(
            posixpath.normpath(posixpath.join(MODEL_CACHE_DIR, model_cache.path, "hub"))
            if model_cache is not None
            else None
        ),
        hub_cache_read_only=model_cache is not None and model_cache.read_only,
        linger_seconds=settings.metrics_linger_seconds,
    )
