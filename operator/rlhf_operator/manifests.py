"""Reading job manifests from files, folders and standard input, as kubectl does."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

from .api import KINDS_BY_NAME, FieldError, ManifestError, TrainingJob, parse_manifest

STDIN = Path("-")
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class InvalidManifests(ManifestError):
    """Several documents are invalid: every one is reported, not only the first."""

    def __init__(self, problems: list[ManifestError]) -> None:
        self.problems = problems
        super().__init__([error for problem in problems for error in problem.errors])

    def lines(self) -> list[str]:
        return [line for problem in self.problems for line in problem.lines()]


class NoJobs(ManifestError):
    """The files hold no job manifest at all (kubectl: "no objects passed")."""


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files as given; a folder's .yaml, .yml and .json files (sorted, not recursive, as
    ``kubectl apply -f DIR``); ``-`` for standard input, once."""
    found: list[Path] = []
    for path in paths:
        if path == STDIN or not path.is_dir():
            found.append(path)
            continue
        found.extend(sorted(child for child in path.iterdir() if child.suffix in MANIFEST_SUFFIXES))
    return found


def load_jobs(paths: Iterable[Path], stdin_text: str | None = None) -> list[TrainingJob]:
    """Parse every document of every file; raise InvalidManifests naming every bad one.

    Documents of other kinds (a Namespace, a PVC with data) are skipped, so a file that
    works with ``kubectl apply -f`` works here too; no job at all is an error (NoJobs).
    """
    given = list(paths)
    jobs: list[TrainingJob] = []
    problems: list[ManifestError] = []
    files = expand(given)
    for path in files:
        name = "<stdin>" if path == STDIN else str(path)
        try:
            text = (
                (stdin_text if stdin_text is not None else sys.stdin.read())
                if path == STDIN
                else path.read_text()
            )
            documents = list(yaml.safe_load_all(text))
        except (OSError, yaml.YAMLError) as error:
            problems.append(ManifestError([FieldError("", f"cannot read YAML: {error}")], name))
            continue
        for index, document in enumerate(documents):
            if document is None or not _is_ours(document):
                continue
            source = name if len(documents) == 1 else f"{name} (document {index + 1})"
            try:
                jobs.append(parse_manifest(document, source))
            except ManifestError as error:
                problems.append(error)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise InvalidManifests(problems)
    if not jobs:
        kinds = ", ".join(KINDS_BY_NAME)
        where = ", ".join("<stdin>" if p == STDIN else str(p) for p in given) or "no files"
        raise NoJobs([FieldError("", f"no objects passed: no {kinds} manifest in {where}")])
    return jobs


def _read_stdin(given: str | None) -> str:
    return given if given is not None else sys.stdin.read()


def _is_ours(document: object) -> bool:
    """Our group, or something that is not a Kubernetes object at all (reported as bad)."""
    if not isinstance(document, dict):
        return True
    api_version = document.get("apiVersion")
    return not isinstance(api_version, str) or api_version.split("/")[0] == "rlhf.dev"
