"""The trainer's config file: the job's manifest plus where its inputs and output are.

The operator renders it into the job's ConfigMap, local mode writes it into the run
folder, and the trainer parses it with this same model, so a pod and a laptop run
exactly the same configuration.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import ApiModel
from .kinds import DPOJob, PPOJob, RewardModelJob, SFTJob

InputSlot = Literal["model", "policy", "rewardModel", "valueModel", "dataset"]
"""The spec fields that name a source: the trainer looks up their local paths by these names."""

CONFIG_PATH = "/etc/rlhf/config.json"
OUTPUT_DIR = "/output"
INPUTS_DIR = "/inputs"
MODEL_CACHE_DIR = "/model-cache"
"""Where a job's modelCache claim is mounted."""
METRICS_PORT = 9090
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
FINAL_MODEL_DIR = "model"
"""The folder, inside a job's output, holding its finished model."""


def hub_token_variable(slot: InputSlot) -> str:
    """The environment variable carrying the Hub token of a source's tokenSecretRef.

    The operator fills it from the Secret; the trainer reads it. Tokens never go into the
    config file (a ConfigMap anyone with read access to the namespace can see).
    """
    snake = "".join("_" + c if c.isupper() else c.upper() for c in slot)
    return f"RLHF_HUB_TOKEN_{snake}"


class TrainerPaths(ApiModel):
    """Where things are on the machine running the trainer."""

    output: str = OUTPUT_DIR
    """Writable folder for checkpoints, the final model, metrics and the report."""
    inputs: dict[InputSlot, str] = Field(default_factory=dict)
    """Local paths of sources on claims or from earlier jobs, by spec field
    (e.g. {"policy": "/inputs/policy/model"}). Hub ids and presets need no path."""
    cache: str | None = None
    """Writable folder for downloaded and generated models; a temporary folder when unset."""
    hub_cache: str | None = None
    """A Hugging Face hub cache folder (HF_HOME's hub/) to load Hub models from instead of
    downloading them into ``cache`` (the job's modelCache)."""
    hub_cache_read_only: bool = False
    """Never download into hub_cache: a model missing there is a config error."""


class TrainerTelemetry(ApiModel):
    """How the trainer reports while it runs and when it ends."""

    metrics_host: str = "0.0.0.0"
    """Address the /metrics and /progress endpoint listens on."""
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = METRICS_PORT
    """Port of the endpoint; 0 picks a free one (local mode prints it)."""
    termination_message_path: str | None = TERMINATION_MESSAGE_PATH
    """Where the one-line JSON summary goes on exit (Kubernetes shows it in the pod status)."""
    linger_seconds: Annotated[float, Field(ge=0, le=600)] = 0.0
    """Keep serving /metrics this long after training ends, so Prometheus scrapes the final
    evaluation figures before the pod goes away."""


class TrainerConfig(ApiModel):
    """Everything a training process needs."""

    job: Annotated[SFTJob | RewardModelJob | PPOJob | DPOJob, Field(discriminator="kind")]
    """The job's manifest, validated with the same models as the CRDs."""
    paths: TrainerPaths = Field(default_factory=TrainerPaths)
    """Where inputs and output are."""
    telemetry: TrainerTelemetry = Field(default_factory=TrainerTelemetry)
    """Metrics endpoint and termination message."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: "auto" uses GPUs when there are any."""
