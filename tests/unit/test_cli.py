"""The rlhf command behaves like kubectl: folders and stdin, every bad document reported,
no objects is an error, one exit code per kind of failure, defaults in the help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from rlhf_operator.manifests import load_jobs
from rlhf_operator.render import rendered_configs

from tests.invalid_manifests import minimal_manifest

ROOT = Path(__file__).resolve().parents[2]


def _rlhf(*arguments: str, stdin: str | None = None, env: dict | None = None):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "rlhf_operator.cli", *arguments],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        env=env,
    )


def test_validate_reads_folders_and_stdin(tmp_path: Path) -> None:
    folder = _rlhf("validate", str(ROOT / "examples" / "smoke"))
    assert folder.returncode == 0, folder.stderr
    assert folder.stdout.splitlines() == [
        "PPOJob/smoke-ppo: valid",
        "RewardModelJob/smoke-rm: valid",
        "SFTJob/smoke-sft: valid",
    ]
    piped = _rlhf("validate", "-", stdin=(ROOT / "examples" / "pipeline.yaml").read_text())
    assert piped.returncode == 0 and piped.stdout.count(": valid") == 3


def test_every_bad_document_is_reported_and_invalid_input_exits_2(tmp_path: Path) -> None:
    first = minimal_manifest("SFTJob", "first")
    first["spec"]["training"] = {"learningRate": -1}
    second = minimal_manifest("PPOJob", "second")
    second["spec"]["ppo"] = {"klCoef": -1}
    good = minimal_manifest("SFTJob", "good")
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump_all([first, good, second]))
    for command in (["validate"], ["local", "run", "--workdir", str(tmp_path / "run")]):
        result = _rlhf(*command, str(path))
        assert result.returncode == 2, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 2, result.stderr
        assert f"{path} (document 1): spec.training.learningRate" in errors[0]
        assert f"{path} (document 3): spec.ppo.klCoef" in errors[1]
    assert not (tmp_path / "run").exists()  # nothing ran


def test_files_with_no_job_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "namespace.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {}}))
    for command in (["validate"], ["local", "run", "--workdir", str(tmp_path / "run")]):
        result = _rlhf(*command, str(path))
        assert result.returncode == 2
        assert "no objects passed" in result.stderr


def test_every_option_shows_its_default() -> None:
    result = _rlhf("local", "run", "--help")
    assert "(default: runs/local)" in result.stdout
    assert "exit codes:" in result.stdout


def test_the_operator_without_a_cluster_says_what_to_do(tmp_path: Path) -> None:
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    result = _rlhf("operator", "--standalone", "--metrics-port", "0", "--health-port", "0", env=env)
    assert result.returncode == 2
    assert "no Kubernetes configuration" in result.stderr and "KUBECONFIG" in result.stderr
    assert "Traceback" not in result.stderr


def test_render_gives_the_config_the_pods_read() -> None:
    jobs = load_jobs([ROOT / "examples" / "pipeline.yaml"])
    configs = rendered_configs(jobs)
    assert sorted(configs) == ["qwen-ppo-ppo", "qwen-rm-rm", "qwen-sft-sft"]
    ppo = configs["qwen-ppo-ppo"]
    assert ppo["paths"]["inputs"] == {
        "policy": "/inputs/policy/qwen-sft-sft/model",
        "rewardModel": "/inputs/rewardModel/qwen-rm-rm/model",
    }
    assert ppo["paths"]["output"] == "/output/qwen-ppo-ppo"
    assert ppo["telemetry"]["terminationMessagePath"] == "/dev/termination-log"
    assert ppo["job"]["spec"]["ppo"]["klCoef"] == 0.05
    printed = _rlhf("render", str(ROOT / "examples" / "pipeline.yaml"))
    assert printed.returncode == 0
    decoder, text, documents = json.JSONDecoder(), printed.stdout, []
    position = 0
    while text[position:].strip():
        document, end = decoder.raw_decode(text[position:].lstrip())
        position = len(text) - len(text[position:].lstrip()) + end
        documents.append(document)
    assert documents == list(configs.values())


def test_the_trainer_takes_a_job_manifest(tmp_path: Path) -> None:
    manifest = minimal_manifest("SFTJob", "direct")
    manifest["spec"].update(
        {
            "model": {"preset": "tiny"},
            "dataset": {"preset": "tiny"},
            "training": {"maxSteps": 3, "batchSize": 4, "maxLength": 32},
            "generation": {"samples": 0},
            "resources": {"gpusPerNode": 0},
        }
    )
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(manifest))
    output = tmp_path / "out"
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlhf_trainer",
            "sft",
            "--config",
            str(path),
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert json.loads((output / "metrics.json").read_text())["steps"] == 3

    manifest["spec"]["dataset"] = {"pvc": {"claimName": "data", "path": "train.jsonl"}}
    path.write_text(yaml.safe_dump(manifest))
    refused = subprocess.run(
        [sys.executable, "-m", "rlhf_trainer", "sft", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert refused.returncode == 78
    assert "--input dataset=PATH" in refused.stderr
