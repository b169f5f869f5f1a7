"""Reading job manifests from YAML files, as kubectl would."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml

from .api import FieldError, ManifestError, TrainingJob, parse_manifest


def load_jobs(paths: Iterable[Path]) -> list[TrainingJob]:
    """Parse every document of every file; raise ManifestError on the first bad one.

    Documents of other kinds (a Namespace, a PVC with data) are skipped, so a file that
    works with ``kubectl apply -f`` works here too.
    """
    jobs = []
    for path in paths:
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as error:
            raise ManifestError([FieldError("", f"cannot read YAML: {error}")], str(path)) from None
        for index, document in enumerate(documents):
            if document is None:
                continue
            if isinstance(document, dict) and document.get("apiVersion", "").split("/")[0] not in (
                "rlhf.dev",
            ):
                continue
            source = f"{path}" if len(documents) == 1 else f"{path} (document {index + 1})"
            jobs.append(parse_manifest(document, source))
    return jobs
