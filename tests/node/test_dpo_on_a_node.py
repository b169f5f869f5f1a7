"""A DPOJob on a real node: examples/dpo/pipeline.yaml (SFT -> DPO with a reward-model
judge) through the operator and the trainer image, then a second DPOJob that starts from
the first one's policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "dpo" / "pipeline.yaml"


def _fitted(document: dict) -> dict:
    """One CPU and 4Gi each, as the smoke jobs: fits a 2-CPU node beside the cluster."""
    document["spec"]["resources"].update({"cpu": "1", "memory": "4Gi"})
    return document


def test_dpo_example_and_a_dpo_job_chained_from_it(pipeline) -> None:
    sft, judge, dpo = (_fitted(doc) for doc in yaml.safe_load_all(EXAMPLE.read_text()))
    again = json.loads(json.dumps(dpo))
    again["metadata"]["name"] = "dpo-again"
    again["spec"]["policy"] = {"fromJob": {"kind": "DPOJob", "name": "dpo-demo"}}
    again["spec"].pop("rewardModel")
    again["spec"]["training"] = {**again["spec"]["training"], "maxSteps": 2}
    pipeline.apply(again, dpo, judge, sft)

    # The chained DPOJob waits for the first, which waits for its policy and its judge.
    waiting = pipeline.wait_for_phase("dpojob", "dpo-again", "Waiting", 30)
    condition = next(c for c in waiting["status"]["conditions"] if c["type"] == "Waiting")
    assert "DPOJob/dpo-demo" in condition["message"], condition

    first = pipeline.wait_for_phase("dpojob", "dpo-demo", "Succeeded", 480)
    status = first["status"]
    assert status["keyMetric"].startswith("eval_rewards/accuracies=")
    assert status["metrics"]["eval_rewards/accuracies"] >= 0.9, status["metrics"]
    assert status["metrics"]["eval/win_rate"] > 0.5, status["metrics"]
    assert status["output"]["claimName"] == "dpo-demo-dpo-output"
    assert status["output"]["path"] == "dpo-demo-dpo/model"
    assert status["progress"]["percent"] == 100

    # The DPO pod read the policy and the judge through read-only mounts of their claims.
    job = pipeline.get("job.batch", "dpo-demo-dpo")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "dpo"
    claims = {
        volume["persistentVolumeClaim"]["claimName"]: volume["persistentVolumeClaim"].get(
            "readOnly"
        )
        for volume in job["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in volume
    }
    assert claims == {
        "dpo-demo-dpo-output": None,
        "dpo-demo-sft-output": True,
        "dpo-judge-rm-output": True,
    }
    output = pipeline.claim_folder("dpo-demo-dpo-output") / "dpo-demo-dpo"
    assert (output / "model" / "COMPLETE").exists()
    judged = (output / "model" / "samples.jsonl").read_text().splitlines()
    assert 0 < len(judged) <= 12  # distinct held-out prompts, at most dpo.evalPrompts

    chained = pipeline.wait_for_phase("dpojob", "dpo-again", "Succeeded", 300)
    assert chained["status"]["metrics"]["eval_rewards/accuracies"] >= 0.0
    config = json.loads(pipeline.get("configmap", "dpo-again-dpo-config")["data"]["config.json"])
    assert config["paths"]["inputs"] == {"policy": "/inputs/policy/dpo-demo-dpo/model"}

    table = pipeline.kubectl("get", "dpo", "--no-headers").stdout.splitlines()
    assert len(table) == 2 and all(row.split()[1:3] == ["Succeeded", "100"] for row in table)
    assert "dpojob.rlhf.dev/dpo-demo" in pipeline.kubectl("get", "rlhf", "-o", "name").stdout
    metrics = pipeline.operator.metrics()
    assert 'rlhf_operator_jobs{kind="DPOJob",phase="Succeeded"} 2.0' in metrics
