"""A job's modelCache (issue 14, item 10): Hub models load from a pre-populated Hugging Face
cache that is mounted read-only, with no download and nothing written to it."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from rlhf_operator.api.trainer_config import TrainerConfig
from rlhf_trainer.errors import ConfigError
from rlhf_trainer.models import load_causal_lm, load_tokenizer
from rlhf_trainer.presets import tiny_model_path

from tests.trainer.conftest import CPU, job_manifest

REPOSITORY = "example-org/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(root: Path, preset_cache: Path) -> Path:
    """The tiny model laid out as ``hf download`` leaves it: HF_HOME/hub/models--org--name
    with a snapshot per commit and refs/main naming it."""
    hub = root / "hub"
    repository = hub / ("models--" + REPOSITORY.replace("/", "--"))
    shutil.copytree(tiny_model_path(str(preset_cache)), repository / "snapshots" / COMMIT)
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text(COMMIT)
    return hub


def _listing(folder: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
    )


def _read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _config(tmp_path: Path, hub: Path, model_id: str) -> TrainerConfig:
    spec: dict[str, Any] = {
        **CPU,
        "model": {"hub": {"id": model_id}},
        "dataset": {"preset": "tiny"},
    }
    return TrainerConfig.model_validate(
        {
            "job": job_manifest("SFTJob", "cached", spec),
            "paths": {
                "output": str(tmp_path / "output"),
                "cache": str(tmp_path / "scratch"),
                "hubCache": str(hub),
                "hubCacheReadOnly": True,
            },
            "device": "cpu",
        }
    )


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any request to a Hub would fail at once (nothing listens there)."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")


def test_a_hub_model_loads_from_a_read_only_cache(tmp_path, preset_cache, offline) -> None:
    import torch

    hub = _hub_cache(tmp_path / "model-cache", preset_cache)
    _read_only(hub.parent)
    before = _listing(hub.parent)
    config = _config(tmp_path, hub, REPOSITORY)
    source = config.job.spec.model
    tokenizer = load_tokenizer(source, "model", config)
    model = load_causal_lm(source, "model", config, torch.float32)
    assert tokenizer.pad_token is not None
    assert model.config.num_hidden_layers == 2
    assert _listing(hub.parent) == before  # no lock, no ref, no .no_exist entry written
    assert not (tmp_path / "scratch" / "hub").exists()  # and nothing downloaded beside it


def test_a_model_missing_from_a_read_only_cache_is_a_config_error(
    tmp_path, preset_cache, offline
) -> None:
    hub = _hub_cache(tmp_path / "model-cache", preset_cache)
    _read_only(hub.parent)
    config = _config(tmp_path, hub, "example-org/not-downloaded")
    with pytest.raises(ConfigError, match="is not in the model cache") as raised:
        load_tokenizer(config.job.spec.model, "model", config)
    assert "spec.modelCache.readOnly: false" in str(raised.value)
    assert raised.value.exit_code == 78
    assert os.environ["HF_ENDPOINT"] == "http://127.0.0.1:9"
