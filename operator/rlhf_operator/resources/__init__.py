"""Pure functions from a validated job to the Kubernetes objects that run it.

No I/O here: the same job and inputs always render the same dicts, which the handlers
create and the unit tests inspect.
"""

from .job import batch_job
from .names import ChildNames, child_names
from .objects import config_map, headless_service, output_claim
from .trainer import pod_trainer_config

__all__ = [
    "ChildNames",
    "batch_job",
    "child_names",
    "config_map",
    "headless_service",
    "output_claim",
    "pod_trainer_config",
]
