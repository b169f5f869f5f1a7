"""Can the pods of a multi-node job mount its claims from several nodes at once?
(issue 14, item 7)

A ReadWriteOnce (or ReadWriteOncePod) claim attaches to one node: the second node's pod
of a job with ``resources.nodes > 1`` would wait forever on a Multi-Attach error. The
output claim the operator creates is refused at admission unless it is ReadWriteMany (CEL
rule ``MULTI_NODE_NEEDS_SHARED_OUTPUT``); the modes of the other claims (an
``existingClaim``, a ``pvc`` source, an upstream job's output, a ``modelCache``) are only
known once they exist, so reconcile reads them before creating anything and the job fails
(reason ClaimNotShared, with an Event) naming the claim, where it comes from and what to
set. Claims are immutable in their access modes, so waiting would never end.

Pure: ``claim_problem`` takes the claims as read from the apiserver.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .api import TrainingJob
from .api.trainer_config import InputSlot
from .chaining import Decision
from .inputs import inputs

CLAIM_NOT_SHARED = "ClaimNotShared"
READ_BY_SEVERAL_NODES = frozenset({"ReadOnlyMany", "ReadWriteMany"})
WRITTEN_BY_SEVERAL_NODES = frozenset({"ReadWriteMany"})


@dataclass(frozen=True)
class MountedClaim:
    """A claim the job's pods mount: which, for what, and how to fix it if it is not shared."""

    name: str
    role: str
    """e.g. "its output (spec.output.existingClaim)", "input policy (the output of SFTJob/x)"."""
    needs: frozenset[str]
    remedy: str


def mounted_claims(
    job: TrainingJob, input_claims: Mapping[InputSlot, tuple[str, str]]
) -> list[MountedClaim]:
    """Every claim a job's pods mount that the operator did not create for it."""
    spec = job.spec
    found: list[MountedClaim] = []
    if spec.output.existing_claim:
        found.append(
            MountedClaim(
                spec.output.existing_claim,
                "its output (spec.output.existingClaim)",
                WRITTEN_BY_SEVERAL_NODES,
                "use a ReadWriteMany claim as spec.output.existingClaim",
            )
        )
    upstream_of = {needed.slot: needed.upstream for needed in inputs(job)}
    for slot, (claim, _) in sorted(input_claims.items()):
        upstream = upstream_of.get(slot)
        if upstream is not None:
            label = f"{upstream.kind}/{upstream.name}"
            found.append(
                MountedClaim(
                    claim,
                    f"input {slot} (the output of {label})",
                    READ_BY_SEVERAL_NODES,
                    f"re-create {label} with spec.output.accessModes: [ReadWriteMany] (or an"
                    " existingClaim that is ReadWriteMany)",
                )
            )
        else:
            found.append(
                MountedClaim(
                    claim,
                    f"input {slot} (spec.{slot}.pvc)",
                    READ_BY_SEVERAL_NODES,
                    "copy the data to a ReadOnlyMany or ReadWriteMany claim",
                )
            )
    cache = spec.model_cache
    if cache is not None:
        found.append(
            MountedClaim(
                cache.claim_name,
                "the model cache (spec.modelCache)",
                READ_BY_SEVERAL_NODES if cache.read_only else WRITTEN_BY_SEVERAL_NODES,
                "use a ReadOnlyMany or ReadWriteMany claim (ReadWriteMany with readOnly: false)",
            )
        )
    return found


def access_modes(claim: Mapping[str, Any]) -> list[str]:
    """The modes a claim has: as bound (status), else as asked for (spec)."""
    status = claim.get("status") or {}
    return list(status.get("accessModes") or (claim.get("spec") or {}).get("accessModes") or [])


def claim_problem(
    job: TrainingJob,
    input_claims: Mapping[InputSlot, tuple[str, str]],
    found: Mapping[str, Mapping[str, Any] | None],
) -> Decision | None:
    """A failed Decision when a multi-node job would mount a claim that cannot be attached
    to several nodes; None when every claim can be (or the job runs on one node, or a claim
    does not exist yet: its pods then say FailedMount, podwait.py)."""
    nodes = job.spec.resources.nodes
    if nodes <= 1:
        return None
    for mounted in mounted_claims(job, input_claims):
        claim = found.get(mounted.name)
        if claim is None:
            continue
        modes = access_modes(claim)
        if mounted.needs & set(modes):
            continue
        wanted = " or ".join(sorted(mounted.needs))
        return Decision(
            "failed",
            CLAIM_NOT_SHARED,
            f"claim {mounted.name}, {mounted.role}, is {', '.join(modes) or 'of no access mode'}:"
            f" the {nodes} nodes of this job would mount it on several nodes (Multi-Attach),"
            f" which needs {wanted}; {mounted.remedy}, or run this job on one node"
            " (spec.resources.nodes: 1), then re-create it",
        )
    return None


def claims_to_read(
    job: TrainingJob, input_claims: Mapping[InputSlot, tuple[str, str]]
) -> list[str]:
    """The claims reconcile reads for ``claim_problem`` (none for a single-node job)."""
    if job.spec.resources.nodes <= 1:
        return []
    return sorted({mounted.name for mounted in mounted_claims(job, input_claims)})
