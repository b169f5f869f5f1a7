"""The whole product as a user meets it: helm install, the operator running with the
chart's ServiceAccount (not admin), kubectl apply of the smoke pipeline, the trainer pods
run for real, and a real Prometheus scraping the trainers (as the common annotation-based
configs do, without honor_labels) and the operator while every dashboard panel's query and
the shipped alerts are checked against what it recorded."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "rlhf-operator"
SMOKE = ROOT / "examples" / "smoke"


def _panel_queries(namespace: str, jobs: str) -> list[tuple[str, str, str]]:
    """Every panel query with the variables set as a user picks them."""
    queries = []
    for path in sorted((CHART / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        panels = []
        for panel in board["panels"]:
            panels.extend(panel.get("panels", [panel]))
        for panel in panels:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$namespace", namespace).replace("$job", jobs)
                queries.append((path.stem, panel["title"], expr))
    return queries


@pytest.fixture
def installed_chart(crds_installed, tmp_path):  # type: ignore[no-untyped-def]
    """The chart installed for real, watching one fresh namespace."""
    suffix = uuid.uuid4().hex[:6]
    system, watched = f"rlhf-system-{suffix}", f"team-{suffix}"
    crds_installed.kubectl("create", "namespace", watched)
    crds_installed.wait_for_service_account(watched)
    crds_installed.helm(
        "install",
        f"rlhf-{suffix}",
        str(CHART),
        "--namespace",
        system,
        "--create-namespace",
        "--set",
        "fullnameOverride=rlhf-operator",
        "--set",
        f"watchNamespaces={{{watched}}}",
        "--wait=false",
    )
    crds_installed.wait_for_service_account(system, "rlhf-operator")
    kubeconfig = crds_installed.kubeconfig_for_service_account(
        system, "rlhf-operator", tmp_path / "operator.kubeconfig"
    )
    yield watched, Path(kubeconfig)
    crds_installed.helm("uninstall", f"rlhf-{suffix}", "--namespace", system, check=False)
    for namespace in (system, watched):
        crds_installed.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_pipeline_as_the_chart_service_account_with_prometheus_and_dashboards(
    crds_installed, installed_chart, tmp_path, monkeypatch
) -> None:
    from harness.executor import PodExecutor
    from harness.pipeline import OperatorProcess, Pipeline, free_port
    from harness.prometheus import Prometheus, annotated_pod, annotation_scrape_job

    namespace, kubeconfig = installed_chart
    monkeypatch.setenv("RLHF_TRAINER_METRICS_LINGER_SECONDS", "3")
    trainer_port = free_port()
    operator = OperatorProcess(kubeconfig, namespace, tmp_path / "operator.log", trainer_port)
    prometheus = Prometheus(
        tmp_path / "prometheus",
        {
            "global": {"scrape_interval": "500ms", "evaluation_interval": "1s"},
            "rule_files": [str(CHART / "prometheus" / "rules.yaml")],
            "scrape_configs": [
                {
                    "job_name": "rlhf-operator",
                    "static_configs": [{"targets": [f"127.0.0.1:{operator.metrics_port}"]}],
                },
                # As the common prometheus.io/scrape recipes scrape pods: target labels
                # job, namespace, pod and no honor_labels.
                annotation_scrape_job(
                    [
                        annotated_pod(
                            f"127.0.0.1:{trainer_port}",
                            namespace=namespace,
                            pod="trainer",
                            labels={"app.kubernetes.io/name": "rlhf-trainer"},
                            port=trainer_port,
                        )
                    ]
                ),
            ],
        },
    )
    executor = PodExecutor(
        crds_installed,
        tmp_path / "volumes",
        namespace=namespace,
        label_selector="app.kubernetes.io/managed-by=rlhf-operator",
        expose_paths=[ROOT],
    )
    prometheus.start()
    executor.start()
    # Not standalone: the replica elects itself through the chart's KopfPeering object.
    operator.start(standalone=False)
    try:
        pipeline = Pipeline(crds_installed, namespace, executor, operator, tmp_path)
        started = time.time()
        # Long enough that several 500 ms scrapes land while each one trains (the smoke
        # reward model's 60 steps once finished between two scrapes on an idle machine).
        sft = yaml.safe_load((SMOKE / "sftjob.yaml").read_text())
        sft["spec"]["training"]["maxSteps"] = 300
        reward = yaml.safe_load((SMOKE / "rewardmodeljob.yaml").read_text())
        reward["spec"]["training"]["maxSteps"] = 300
        ppo = yaml.safe_load((SMOKE / "ppojob.yaml").read_text())
        ppo["spec"]["ppo"]["totalEpisodes"] = 512  # 32 updates
        pipeline.apply(sft, reward, ppo)
        broken = yaml.safe_load((SMOKE / "sftjob.yaml").read_text())
        broken["metadata"]["name"] = "broken"
        broken["spec"]["model"] = {"pvc": {"claimName": "nowhere", "path": "model"}}
        broken["spec"]["dataset"] = {"preset": "tiny"}
        pipeline.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "nowhere"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
            broken,
        )
        for kind, name in (
            ("sftjob", "smoke-sft"),
            ("rewardmodeljob", "smoke-rm"),
            ("ppojob", "smoke-ppo"),
        ):
            pipeline.wait_for_phase(kind, name, "Succeeded", 400)
        failed = pipeline.wait_for_phase("sftjob", "broken", "Failed", 120)
        assert (
            next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")["reason"]
            == "ConfigError"
        )
        time.sleep(4)  # a few more scrapes and rule evaluations
        end = time.time()

        log = operator.log.read_text()
        assert "forbidden" not in log.lower(), log[-3000:]

        def series(expr: str) -> list[dict]:
            return prometheus.query_range(expr, started, end)

        steps = {
            s["metric"]["rlhf_job"]: [float(v) for _, v in s["values"]]
            for s in series(f'rlhf_training_step{{rlhf_namespace="{namespace}"}}')
        }
        assert set(steps) >= {"smoke-sft", "smoke-rm", "smoke-ppo"}
        for job, values in steps.items():
            if job != "broken":
                assert max(values) > min(values), f"{job}: step never increased"
        assert series(f'rlhf_training_loss{{rlhf_job="smoke-sft", rlhf_namespace="{namespace}"}}')
        # Scraped without honor_labels, nothing is renamed, and no NAME_created series.
        assert not series('{__name__=~"rlhf_.+", exported_job!=""}')
        assert not series('{__name__=~"rlhf_.+", exported_namespace!=""}')
        assert not series('{__name__=~"rlhf_.+_created"}')
        stages = {(s["metric"]["kind"], s["metric"]["stage"]) for s in series("rlhf_trainer_info")}
        assert {("SFTJob", "sft"), ("RewardModelJob", "rm"), ("PPOJob", "ppo")} <= stages

        def peak(expr: str) -> float:
            return max(float(v) for s in series(expr) for _, v in s["values"])

        # Counters of the work done, and PPO's loss and gradient norm in the training series.
        assert peak('rlhf_training_tokens_total{rlhf_job="smoke-sft"}') > 0
        assert peak('rlhf_training_samples_total{rlhf_job="smoke-rm"}') > 0
        assert peak('rlhf_ppo_episodes_total{rlhf_job="smoke-ppo"}') >= 512
        assert series('rlhf_training_loss{rlhf_job="smoke-ppo"}')
        assert peak('rlhf_training_gradient_norm{rlhf_job="smoke-ppo"}') > 0
        eval_metrics = {
            (s["metric"]["kind"], s["metric"]["metric"]) for s in series("rlhf_eval_metric")
        }
        assert {
            ("SFTJob", "loss"),
            ("RewardModelJob", "accuracy"),
            ("PPOJob", "reward_policy"),
            ("PPOJob", "win_rate"),
            ("PPOJob", "kl"),
        } <= eval_metrics
        assert series('rlhf_ppo_score{rlhf_job="smoke-ppo"}')
        assert series('rlhf_ppo_kl{rlhf_job="smoke-ppo"}')
        succeeded = prometheus.query('sum(rlhf_operator_jobs{phase="Succeeded"})')
        assert float(succeeded[0]["value"][1]) == 3
        assert prometheus.query(
            'rlhf_operator_job_failures_total{kind="SFTJob", reason="ConfigError"}'
        )

        # The dashboards' job variable offers the jobs' names (not the scrape job's).
        offered = {
            s["metric"]["rlhf_job"]
            for s in series(
                f'group by (rlhf_job) (rlhf_training_step{{rlhf_namespace="{namespace}"}})'
            )
        }
        assert {"smoke-sft", "smoke-rm", "smoke-ppo"} <= offered
        empty = [
            f"{board}: {title}: {expr}"
            for board, title, expr in _panel_queries(namespace, "|".join(sorted(offered)))
            if not series(expr)
        ]
        assert not empty, "dashboard queries without data after a run:\n" + "\n".join(empty)

        firing = {
            (a["metric"]["alertname"], a["metric"].get("reason"))
            for a in prometheus.query("ALERTS")
        }
        assert ("RLHFJobFailed", "ConfigError") in firing
        assert not any(name in ("RLHFOperatorDown", "RLHFJobStuck") for name, _ in firing)
    finally:
        operator.stop()
        executor.stop()
        prometheus.stop()
