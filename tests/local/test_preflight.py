"""Local mode never reuses stale results and checks every input before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from rlhf_operator.local import fingerprint
from rlhf_operator.local.plan import order
from rlhf_operator.local.preflight import (
    check_inputs,
    plan_stages,
    record_start,
    stale_message,
)
from rlhf_operator.manifests import load_jobs

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "local" / "pipeline.yaml"


def _demo(tmp_path: Path, edit=None) -> list:  # type: ignore[no-untyped-def]
    documents = list(yaml.safe_load_all(DEMO.read_text()))
    if edit:
        edit(documents)
    path = tmp_path / "pipeline.yaml"
    path.write_text("---\n".join(yaml.safe_dump(d) for d in documents))
    return order(load_jobs([path]))


def _pretend_finished(plans) -> None:  # type: ignore[no-untyped-def]
    """Leave each planned folder as a finished trainer would (fingerprint, model, metrics)."""
    for plan in plans:
        plan.folder.mkdir(parents=True, exist_ok=True)
        fingerprint.write(plan.folder, record_start(plan))
        (plan.folder / "model").mkdir(exist_ok=True)
        (plan.folder / "model" / "COMPLETE").write_text("{}")
        (plan.folder / "metrics.json").write_text(json.dumps({"phase": "Succeeded"}))


def test_an_unchanged_pipeline_is_skipped_and_a_changed_stage_is_refused(tmp_path) -> None:
    workdir = tmp_path / "run"
    jobs = _demo(tmp_path)
    first = plan_stages(jobs, workdir, {})
    assert [plan.action for plan in first] == ["run", "run", "run"]
    _pretend_finished(first)
    assert [plan.action for plan in plan_stages(jobs, workdir, {})] == ["skip"] * 3

    # How it runs (run policy, resources) does not change results: still skipped.
    def run_differently(documents: list) -> None:
        documents[0]["spec"]["runPolicy"]["checkpointInterval"] = 7
        documents[0]["spec"]["resources"]["gpusPerNode"] = 4

    assert [p.action for p in plan_stages(_demo(tmp_path, run_differently), workdir, {})] == [
        "skip"
    ] * 3

    # The edit: SFT steps and learning rate, PPO's KL coefficient.
    def edit(documents: list) -> None:
        documents[0]["spec"]["training"].update({"maxSteps": 50, "learningRate": 1e-5})
        documents[2]["spec"]["ppo"]["klCoef"] = 0.5

    changed = plan_stages(_demo(tmp_path, edit), workdir, {})
    assert [plan.action for plan in changed] == ["stale", "stale", "stale"]
    sft, reward, ppo = changed
    assert "spec.training.maxSteps: 300 -> 50" in sft.reasons
    assert "spec.training.learningRate: 0.003 -> 1e-05" in sft.reasons
    assert "input SFTJob/demo changed" in reward.reasons
    assert "spec.ppo.klCoef: 0.02 -> 0.5" in ppo.reasons
    message = "\n".join(stale_message(changed, "rlhf local run x"))
    assert "--restart" in message and "--from SFTJob/demo" in message

    restarted = plan_stages(_demo(tmp_path, edit), workdir, {}, restart=True)
    assert [plan.action for plan in restarted] == ["restart"] * 3


def test_a_retrained_upstream_makes_its_readers_stale(tmp_path) -> None:
    workdir = tmp_path / "run"
    jobs = _demo(tmp_path)
    plans = plan_stages(jobs, workdir, {})
    _pretend_finished(plans)
    # The SFT folder is deleted: SFT trains again, so what read the old model is stale.
    import shutil

    shutil.rmtree(plans[0].folder)
    again = plan_stages(jobs, workdir, {})
    assert [plan.action for plan in again] == ["run", "stale", "stale"]
    assert again[1].reasons == ["input SFTJob/demo will be retrained"]

    # Retrained with the same spec (a new run id): the reward model read the older run.
    _pretend_finished(again[:1])
    after = plan_stages(jobs, workdir, {})
    assert [plan.action for plan in after] == ["skip", "stale", "stale"]
    assert after[1].reasons == ["input SFTJob/demo was retrained since"]


def test_from_retrains_a_job_and_everything_after_it(tmp_path) -> None:
    workdir = tmp_path / "run"
    jobs = _demo(tmp_path)
    _pretend_finished(plan_stages(jobs, workdir, {}))
    forced = plan_stages(jobs, workdir, {}, start_from={("RewardModelJob", "demo")})
    assert [plan.action for plan in forced] == ["skip", "restart", "restart"]


def test_an_interrupted_stage_resumes_only_under_the_spec_that_made_it(tmp_path) -> None:
    workdir = tmp_path / "run"
    jobs = _demo(tmp_path)
    sft = plan_stages(jobs, workdir, {})[0]
    sft.folder.mkdir(parents=True)
    fingerprint.write(sft.folder, record_start(sft))
    (sft.folder / "checkpoints" / "checkpoint-100").mkdir(parents=True)
    assert plan_stages(jobs, workdir, {})[0].action == "resume"

    def edit(documents: list) -> None:
        documents[0]["spec"]["training"]["maxSteps"] = 600

    assert plan_stages(_demo(tmp_path, edit), workdir, {})[0].action == "stale"


def test_a_folder_from_before_fingerprints_is_judged_by_its_config(tmp_path) -> None:
    workdir = tmp_path / "run"
    jobs = _demo(tmp_path)
    sft = plan_stages(jobs, workdir, {})[0]
    sft.folder.mkdir(parents=True)
    (sft.folder / "config.json").write_text(json.dumps({"job": jobs[0].to_manifest()}))
    assert plan_stages(jobs, workdir, {})[0].action == "resume"

    def edit(documents: list) -> None:
        documents[0]["spec"]["training"]["learningRate"] = 1e-4

    assert plan_stages(_demo(tmp_path, edit), workdir, {})[0].action == "stale"


def _claim_pipeline(tmp_path: Path) -> list:
    documents = [
        {
            "apiVersion": "rlhf.dev/v1alpha1",
            "kind": "SFTJob",
            "metadata": {"name": "mine"},
            "spec": {
                "model": {"pvc": {"claimName": "models", "path": "base"}},
                "dataset": {"pvc": {"claimName": "data", "path": "train.jsonl"}},
            },
        }
    ]
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return order(load_jobs([path]))


def test_every_input_problem_is_reported_before_anything_runs(tmp_path) -> None:
    jobs = _claim_pipeline(tmp_path)
    models = tmp_path / "models"
    (models / "base").mkdir(parents=True)  # no config.json: not a model
    problems = [
        f"{where}: {problem}"
        for where, problem in check_inputs(
            jobs, {"models": models, "unused": tmp_path, "gone": tmp_path / "nope"}
        )
    ]
    assert len(problems) == 4, problems
    assert any("spec.dataset.pvc.claimName" in p and "--claim data=DIR" in p for p in problems)
    assert any("spec.model.pvc.path" in p and "config.json is missing" in p for p in problems)
    assert any(p.startswith("--claim: unused=") and "no job reads" in p for p in problems)
    assert any(p.startswith("--claim: gone=") and "no such folder" in p for p in problems)

    (models / "base" / "config.json").write_text("{}")
    data = tmp_path / "data"
    data.mkdir()
    problems = check_inputs(jobs, {"models": models, "data": data})
    assert [str(p) for _, p in problems] == [
        f"spec.dataset.pvc.path: {data / 'train.jsonl'} does not exist (claim data is {data})"
    ]
    (data / "train.jsonl").write_text("{}\n")
    assert check_inputs(jobs, {"models": models, "data": data}) == []


def test_a_changed_claim_makes_its_stage_stale(tmp_path) -> None:
    jobs = _claim_pipeline(tmp_path)
    models, data = tmp_path / "models", tmp_path / "data"
    (models / "base").mkdir(parents=True)
    (models / "base" / "config.json").write_text("{}")
    data.mkdir()
    (data / "train.jsonl").write_text('{"text": "a"}\n')
    claims = {"models": models, "data": data}
    workdir = tmp_path / "run"
    _pretend_finished(plan_stages(jobs, workdir, claims))
    assert plan_stages(jobs, workdir, claims)[0].action == "skip"
    (data / "train.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    stale = plan_stages(jobs, workdir, claims)[0]
    assert stale.action == "stale"
    assert stale.reasons == [f"claim data ({(data / 'train.jsonl').resolve()}) changed"]
