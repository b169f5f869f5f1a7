"""What determines a stage's results, so a changed manifest never reuses old ones.

A stage's fingerprint holds the parts of its spec that change what it trains (not
``runPolicy``, ``resources``, ``output``, ``image``, ``queueName``, ``distributed``,
``trackers`` or ``modelCache``, which only change how and where it runs) and the identity
of each input: an upstream stage's fingerprint, or a ``--claim`` folder's listing (names,
sizes, modification times). Each run of a stage also gets a run id; a downstream stage
records the run ids it read, so retraining an upstream stage (even with the same spec)
makes it stale.

Everything here is pure except ``folder_identity`` (it lists a folder) and the two
functions that read and write ``fingerprint.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from ..api import TrainingJob

FINGERPRINT_FILE = "fingerprint.json"
HOW_IT_RUNS = (
    "runPolicy",
    "resources",
    "output",
    "image",
    "queueName",
    "distributed",
    "trackers",
    "modelCache",
)


def determining_spec(job: TrainingJob) -> dict[str, Any]:
    """The spec without the fields that only change how and where the job runs."""
    spec = dict(job.to_manifest()["spec"])
    for name in HOW_IT_RUNS:
        spec.pop(name, None)
    return spec


def folder_identity(path: Path) -> dict[str, Any]:
    """A claim folder (or file) as it is now: every file's relative name, size and mtime."""
    resolved = path.resolve()
    listing = []
    if resolved.is_file():
        stat = resolved.stat()
        listing.append((resolved.name, stat.st_size, stat.st_mtime_ns))
    elif resolved.is_dir():
        for root, folders, files in os.walk(resolved):
            folders.sort()
            for name in sorted(files):
                full = Path(root) / name
                stat = full.stat()
                listing.append((str(full.relative_to(resolved)), stat.st_size, stat.st_mtime_ns))
    return {"path": str(resolved), "files": _digest(listing)}


def fingerprint(
    job: TrainingJob, upstream_digests: dict[str, str], claims: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The record of what determines a stage: its determining spec and its inputs."""
    inputs = {"upstreams": dict(sorted(upstream_digests.items())), "claims": claims}
    spec = determining_spec(job)
    return {
        "digest": _digest({"kind": job.kind, "spec": spec, "inputs": inputs}),  # type: ignore[attr-defined]
        "spec": spec,
        "inputs": inputs,
    }


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def changes(old: dict[str, Any], new: dict[str, Any], limit: int = 6) -> list[str]:
    """What differs between two fingerprints, as a person reads it.

    ``spec.training.maxSteps: 300 -> 50``; inputs are named, not diffed.
    """
    found: list[str] = []
    _diff_values("spec", old.get("spec"), new.get("spec"), found)
    old_inputs, new_inputs = old.get("inputs") or {}, new.get("inputs") or {}
    for name in sorted(set(old_inputs.get("upstreams", {})) | set(new_inputs.get("upstreams", {}))):
        if old_inputs.get("upstreams", {}).get(name) != new_inputs.get("upstreams", {}).get(name):
            found.append(f"input {name} changed")
    for name in sorted(set(old_inputs.get("claims", {})) | set(new_inputs.get("claims", {}))):
        before = old_inputs.get("claims", {}).get(name)
        after = new_inputs.get("claims", {}).get(name)
        if before != after:
            where = (after or before or {}).get("path", "")
            found.append(f"claim {name} ({where}) changed")
    if len(found) > limit:
        found = [*found[:limit], f"and {len(found) - limit} more"]
    return found


def read(folder: Path) -> dict[str, Any] | None:
    try:
        document = json.loads((folder / FINGERPRINT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def write(folder: Path, document: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / (FINGERPRINT_FILE + ".tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True))
    os.replace(temporary, folder / FINGERPRINT_FILE)


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _diff_values(path: str, old: Any, new: Any, found: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for name in sorted(set(old) | set(new), key=str):
            _diff_values(f"{path}.{name}", old.get(name), new.get(name), found)
        return
    if old != new:
        found.append(f"{path}: {_short(old)} -> {_short(new)}")


def _short(value: Any) -> str:
    if value is None:
        return "(unset)"
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
