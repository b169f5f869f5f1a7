"""Grafana dashboards as code: one module per dashboard, built with the Grafana Foundation SDK.

``rlhf dashboards --output helm/rlhf-operator/dashboards`` writes them into the chart (as
``rlhf crds`` writes the CRDs); a test fails when the checked-in JSON drifts from the code.
The SDK is needed only to generate them: ``pip install 'rlhf-operator[dashboards]'``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders.dashboard import Dashboard

from . import evaluation, operator_health, pipeline_overview, training
from .common import to_json

# File name (without .json) -> the function that builds that dashboard.
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "evaluation": evaluation.dashboard,
    "operator-health": operator_health.dashboard,
    "pipeline-overview": pipeline_overview.dashboard,
    "training": training.dashboard,
}


def dashboard_documents() -> dict[str, dict[str, Any]]:
    """File name -> the dashboard's JSON model."""
    return {f"{name}.json": to_json(build()) for name, build in DASHBOARDS.items()}


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write_dashboards(directory: Path) -> list[Path]:
    """Write one JSON file per dashboard into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in dashboard_documents().items():
        path = directory / name
        path.write_text(render(document))
        written.append(path)
    return written


def stale_dashboards(directory: Path) -> list[Path]:
    """Files in ``directory`` that differ from what the code generates, and JSON files the
    code no longer generates."""
    documents = dashboard_documents()
    stale = [
        directory / name
        for name, document in documents.items()
        if not (directory / name).exists() or (directory / name).read_text() != render(document)
    ]
    stale.extend(path for path in sorted(directory.glob("*.json")) if path.name not in documents)
    return stale
