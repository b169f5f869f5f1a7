"""Ordering a set of jobs so every job runs after the jobs it reads from."""

from __future__ import annotations

from ..api import FieldError, ManifestError, TrainingJob
from ..inputs import upstreams


def key(job: TrainingJob) -> tuple[str, str]:
    return (job.kind, job.metadata.name)  # type: ignore[attr-defined]


def label(job_key: tuple[str, str]) -> str:
    return f"{job_key[0]}/{job_key[1]}"


def order(jobs: list[TrainingJob]) -> list[TrainingJob]:
    """Jobs in dependency order (file order among equals).

    Refuses, before anything runs: two jobs with the same kind and name, a reference to a
    job that is not in the files, and a cycle.
    """
    by_key: dict[tuple[str, str], TrainingJob] = {}
    for job in jobs:
        if key(job) in by_key:
            raise ManifestError(
                [FieldError("metadata.name", f"{label(key(job))} is defined twice")]
            )
        by_key[key(job)] = job
    for job in jobs:
        for upstream in upstreams(job):
            if (upstream.kind, upstream.name) not in by_key:
                raise ManifestError(
                    [
                        FieldError(
                            "spec",
                            f"{label(key(job))} reads from {upstream.kind}/{upstream.name},"
                            " which is not in the given files; add its manifest",
                        )
                    ]
                )
    ordered: list[TrainingJob] = []
    state: dict[tuple[str, str], str] = {}

    def visit(job: TrainingJob, path: list[tuple[str, str]]) -> None:
        current = key(job)
        if state.get(current) == "done":
            return
        if state.get(current) == "visiting":
            cycle = [*path[path.index(current) :], current]
            raise ManifestError(
                [
                    FieldError(
                        "spec", "fromJob references form a cycle: " + " -> ".join(map(label, cycle))
                    )
                ]
            )
        state[current] = "visiting"
        for upstream in upstreams(job):
            visit(by_key[(upstream.kind, upstream.name)], [*path, current])
        state[current] = "done"
        ordered.append(job)

    for job in jobs:
        visit(job, [])
    return ordered
