"""What a job's state means to tools that judge health: the kstatus conditions.

kstatus (sigs.k8s.io/cli-utils/pkg/kstatus; Flux's health checks, kpt, ``kubectl wait``)
reads two "abnormal-true" conditions and observedGeneration: ``Reconciling`` True while
the controller is still working towards the spec, ``Stalled`` True when it cannot get
there without someone's help, and a status whose observedGeneration lags the spec is not
current. ``Ready`` True means the job reached its desired state, and for a training job
that is a trained model: Ready is True once it has Succeeded, never before (a Job and its
pods existing, or training running, is progress, not health). So:

=============  ===========  =======  =====  ==================================
phase          Reconciling  Stalled  Ready  kstatus / Argo CD (docs/health.md)
=============  ===========  =======  =====  ==================================
Pending        True         False    False  InProgress / Progressing
Waiting        True         False    False  InProgress / Progressing
 (a child owned by someone else)  False  True  False  Failed / Degraded
Running        True         False    False  InProgress / Progressing
Suspended      False        False    False  Current / Suspended
Succeeded      False        False    True   Current / Healthy
Failed         False        True     False  Failed / Degraded
=============  ===========  =======  =====  ==================================

A job waiting for a same-named child that belongs to someone else cannot proceed until a
person deletes it or renames the job: Stalled. One whose upstream has not succeeded yet,
whose leftover children are being deleted, or whose pods wait for a node or an image is
still progressing (the start deadline turns pods that never start into Failed).
"""

from __future__ import annotations

from typing import NamedTuple

from .ownership import OWNED_BY_ANOTHER

PROGRESSING_PHASES = ("Pending", "Waiting", "Running")
HEALTH_CONDITIONS = ("Reconciling", "Stalled", "Ready")


class Health(NamedTuple):
    """One condition: type, whether it holds, reason, message."""

    kind: str
    state: bool
    reason: str
    message: str


def is_stalled(phase: str | None, reason: str) -> bool:
    """Failed, or waiting for something only a person can change."""
    return phase == "Failed" or (phase == "Waiting" and reason == OWNED_BY_ANOTHER)


def health(phase: str | None, reason: str, message: str) -> list[Health]:
    """Reconciling, Stalled and Ready for a job in ``phase`` (its reason and message)."""
    why = reason or phase or "Pending"
    stalled = is_stalled(phase, reason)
    reconciling = phase in PROGRESSING_PHASES and not stalled
    ready = phase == "Succeeded"
    return [
        Health("Reconciling", reconciling, why, message if reconciling else ""),
        Health("Stalled", stalled, why, message if stalled else ""),
        Health("Ready", ready, why, message),
    ]
