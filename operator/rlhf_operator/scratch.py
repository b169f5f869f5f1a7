"""A training pod evicted for its own use of scratch disk (issue 14, item 10).

Every training pod requests and is limited to ``resources.scratchDisk`` of ephemeral
storage, and its /tmp and /cache emptyDirs have that size limit. A pod that writes more
(a download larger than the scratch disk) is evicted by the kubelet with reason Evicted
and one of the messages below, and without the DisruptionTarget condition that node
pressure and preemption carry (so the pod failure policy does not ignore it). Retrying
would download the same files into the same disk again: the job fails at once with
reason ScratchDiskExceeded, naming the field to raise. Evictions for node pressure (other
pods filled the disk) are not the job's doing and keep retrying without counting.

Pure: reads pods as the cache keeps them (cache.py keeps status.reason and message).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SCRATCH_DISK_EXCEEDED = "ScratchDiskExceeded"
OWN_USE_MESSAGES = (
    "Usage of EmptyDir volume",  # an emptyDir over its sizeLimit
    "Pod ephemeral local storage usage exceeds the total limit",  # the pod over its limit
    "exceeded its local ephemeral storage limit",  # a container over its limit
)
"""The kubelet's eviction messages for a pod over its own ephemeral-storage limits
(pkg/kubelet/eviction/helpers.go), as opposed to node pressure."""


def scratch_disk_eviction(pods: Iterable[Mapping[str, Any]]) -> str | None:
    """Why the job fails when one of its pods was evicted for exceeding its scratch disk
    (a message naming the pod and the field to raise); None when none was."""
    for pod in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("name") or ""):
        status = pod.get("status") or {}
        message = str(status.get("message") or "")
        if status.get("reason") == "Evicted" and any(own in message for own in OWN_USE_MESSAGES):
            name = (pod.get("metadata") or {}).get("name")
            return (
                f"pod {name} was evicted for writing more than its scratch disk"
                f" ({message.strip()}); raise spec.resources.scratchDisk, or load models"
                " from a spec.modelCache claim instead of downloading them"
            )
    return None
