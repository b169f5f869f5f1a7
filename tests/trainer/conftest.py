"""Helpers for real (tiny) training runs: configs written the way the operator writes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rlhf_operator.api.trainer_config import TrainerConfig


def job_manifest(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "rlhf.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


CPU = {"resources": {"gpusPerNode": 0}}


@pytest.fixture(scope="session")
def preset_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session: the tiny model is built once."""
    return tmp_path_factory.mktemp("preset-cache")


@pytest.fixture
def write_config(tmp_path: Path, preset_cache: Path):  # type: ignore[no-untyped-def]
    """Write a trainer config for a job manifest; returns (config path, output folder)."""

    def write(
        manifest: dict[str, Any], inputs: dict[str, str] | None = None, name: str = "run"
    ) -> tuple[Path, Path]:
        output = tmp_path / name
        config = TrainerConfig.model_validate(
            {
                "job": manifest,
                "paths": {
                    "output": str(output),
                    "inputs": inputs or {},
                    "cache": str(preset_cache),
                },
                "telemetry": {
                    "metricsHost": "127.0.0.1",
                    "metricsPort": 0,
                    "terminationMessagePath": str(tmp_path / f"{name}.termination"),
                },
                "device": "cpu",
            }
        )
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(config.to_manifest()))
        return path, output

    return write


def summary(output: Path) -> dict[str, Any]:
    return json.loads((output / "metrics.json").read_text())


def first_logged(output: Path, name: str) -> float:
    return next(row[name] for row in summary(output)["history"] if name in row)


@pytest.fixture(scope="session")
def family_model(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``family_model("qwen2.5") -> Path``: a tiny model of the family, built once per session.

    Families: see ``tests.trainer.families.FAMILIES``; ``"minilm"`` is the real pretrained
    all-MiniLM-L6-v2 from its wheel. Treat the folders as read-only (they are shared).
    """
    from tests.trainer.families import build_family, minilm

    root = tmp_path_factory.mktemp("families")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            if family == "minilm":
                built[family] = minilm(root / "minilm")
            else:
                built[family] = build_family(family, root / family)
        return built[family]

    return get


@pytest.fixture(scope="session")
def hub_file(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``hub_file("capybara", count=48, seed=0) -> Path``: a JSON Lines file of that Hub shape."""
    from tests.trainer.hub_shapes import write

    root = tmp_path_factory.mktemp("hub-shapes")

    def get(shape: str, count: int = 48, seed: int = 0) -> Path:
        path = root / f"{shape}-{count}-{seed}.jsonl"
        return path if path.exists() else write(shape, path, count, seed)

    return get
