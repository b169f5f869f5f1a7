"""The whole product as a user meets it, on a real node: helm install of the chart with the
images our Dockerfiles build (the operator a pod under the chart's ServiceAccount, in-cluster
configuration), `kubectl apply -f examples/smoke/`, the trainer pods run in containers with
their outputs chained through provisioned claims, status filled from real termination
messages, and a real Prometheus discovering pods through the apiserver and scraping the
trainers and the operator by pod IP (as the common annotation-based configs do, without
honor_labels) while every dashboard panel's query and the shipped alerts are checked against
what it recorded."""

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
def installed_chart(real_cluster):  # type: ignore[no-untyped-def]
    """The chart installed for real with its default image names (the images our Dockerfiles
    built, already in the node's containerd), watching one fresh namespace; the operator runs
    as a pod under the chart's ServiceAccount with in-cluster configuration."""
    kube = real_cluster.kube
    suffix = uuid.uuid4().hex[:6]
    system, watched = f"rlhf-system-{suffix}", f"team-{suffix}"
    kube.kubectl("create", "namespace", watched)
    kube.wait_for_service_account(watched)
    kube.helm(
        "install", f"rlhf-{suffix}", str(CHART),
        "--namespace", system, "--create-namespace",
        "--set", "fullnameOverride=rlhf-operator",
        "--set", f"watchNamespaces={{{watched}}}",
        "--set", "operator.recheckSeconds=1",
        "--set", "trainer.metricsLingerSeconds=3",
        "--wait", "--timeout=180s",
    )  # fmt: skip
    yield system, watched
    kube.helm("uninstall", f"rlhf-{suffix}", "--namespace", system, "--wait", check=False)
    for namespace in (system, watched):
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _dpo_and_grpo_beside_the_smoke_pipeline() -> list[dict]:
    """A DPOJob and a GRPO PPOJob from the smoke SFT policy, judged by the smoke reward model,
    short: every dashboard panel (DPO's, GRPO's zero-variance groups) gets data."""
    smoke_ppo = yaml.safe_load((SMOKE / "ppojob.yaml").read_text())
    resources = smoke_ppo["spec"]["resources"]
    grpo = json.loads(json.dumps(smoke_ppo))
    grpo["metadata"]["name"] = "smoke-grpo"
    grpo["spec"]["ppo"].update(
        {"advantageEstimator": "grpo", "samplesPerPrompt": 4, "totalEpisodes": 64,
         "klPenalty": "loss", "klEstimator": "k3", "evalPrompts": 16}
    )  # fmt: skip
    dpo = {
        "apiVersion": "rlhf.dev/v1alpha1",
        "kind": "DPOJob",
        "metadata": {"name": "smoke-dpo"},
        "spec": {
            "policy": {"fromJob": {"kind": "SFTJob", "name": "smoke-sft"}},
            "rewardModel": {"fromJob": {"kind": "RewardModelJob", "name": "smoke-rm"}},
            "dataset": {"preset": "tiny", "evalFraction": 0.25, "maxSamples": 128},
            "training": {"learningRate": 5e-4, "batchSize": 16, "maxLength": 64,
                         "loggingSteps": 1, "epochs": 1},
            "dpo": {"beta": 0.1, "evalPrompts": 8, "responseLength": 12},
            "resources": resources,
            "output": {"size": "1Gi"},
        },
    }  # fmt: skip
    return [dpo, grpo]


def _prometheus_discovering_pods(real_cluster, folder: Path):  # type: ignore[no-untyped-def]
    """A real Prometheus (on this host's loopback) scraping pods by pod IP with the common
    annotation-based job, pods discovered through the apiserver (harness.PodDiscovery)."""
    from harness.prometheus import PodDiscovery, Prometheus

    kube = real_cluster.kube
    folder.mkdir(parents=True, exist_ok=True)

    def list_pods() -> list[dict]:
        return json.loads(kube.kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]

    discovery = PodDiscovery(list_pods, folder / "pods.json")
    prometheus = Prometheus(
        folder,
        {
            "global": {"scrape_interval": "500ms", "evaluation_interval": "1s"},
            "rule_files": [str(CHART / "prometheus" / "rules.yaml")],
            "scrape_configs": [discovery.scrape_job()],
        },
    )
    return discovery, prometheus


def test_helm_install_then_kubectl_apply_the_smoke_pipeline_with_prometheus_and_dashboards(
    real_cluster, installed_chart, tmp_path
) -> None:
    from harness.pipeline import Pipeline

    system, namespace = installed_chart
    kube = real_cluster.kube
    discovery, prometheus = _prometheus_discovering_pods(real_cluster, tmp_path / "prometheus")
    discovery.start()
    prometheus.start()
    try:
        operator = _InClusterOperator(kube, system)
        pipeline = Pipeline(real_cluster, namespace, operator, tmp_path)
        started = time.time()
        # Exactly what a user types.
        kube.kubectl("apply", "-n", namespace, "-f", str(SMOKE))
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
            *_dpo_and_grpo_beside_the_smoke_pipeline(),
        )
        for kind, name in (
            ("sftjob", "smoke-sft"),
            ("rewardmodeljob", "smoke-rm"),
            ("dpojob", "smoke-dpo"),
            ("ppojob", "smoke-ppo"),
            ("ppojob", "smoke-grpo"),
        ):
            pipeline.wait_for_phase(kind, name, "Succeeded", 400)
        failed = pipeline.wait_for_phase("sftjob", "broken", "Failed", 120)
        assert (
            next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")["reason"]
            == "ConfigError"
        )
        time.sleep(4)  # a few more scrapes and rule evaluations
        end = time.time()

        log = operator.log_text()
        assert "forbidden" not in log.lower(), log[-3000:]
        [operator_pod] = json.loads(kube.kubectl("get", "pods", "-n", system, "-o", "json").stdout)[
            "items"
        ]
        assert operator_pod["spec"]["serviceAccountName"] == "rlhf-operator"
        assert operator_pod["status"]["phase"] == "Running"

        def series(expr: str) -> list[dict]:
            return prometheus.query_range(expr, started, end)

        steps = {
            s["metric"]["rlhf_job"]: [float(v) for _, v in s["values"]]
            for s in series(f'rlhf_training_step{{rlhf_namespace="{namespace}"}}')
        }
        assert set(steps) >= {"smoke-sft", "smoke-rm", "smoke-ppo"}
        for kind, job in (("sftjob", "smoke-sft"), ("rewardmodeljob", "smoke-rm")):
            final = pipeline.get(kind, job)["status"]["progress"]["step"]
            assert max(steps[job]) == final, (job, steps[job][-5:], final)
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
        assert peak('rlhf_ppo_episodes_total{rlhf_job="smoke-ppo"}') >= 128
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
        assert float(succeeded[0]["value"][1]) == 5
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
        assert {"smoke-sft", "smoke-rm", "smoke-ppo", "smoke-dpo", "smoke-grpo"} <= offered
        queries = _panel_queries(namespace, "|".join(sorted(offered)))
        # Series a trainer exports on a GPU only (this node has none): those panels alone.
        gpu_only = [query for query in queries if "_gpu_memory_peak_bytes" in query[2]]
        assert [title for _, title, _ in gpu_only] == ["GPU memory peak per phase"]
        empty = [
            f"{board}: {title}: {expr}"
            for board, title, expr in queries
            if (board, title, expr) not in gpu_only and not series(expr)
        ]
        assert not empty, "dashboard queries without data after a run:\n" + "\n".join(empty)

        firing = {
            (a["metric"]["alertname"], a["metric"].get("reason"))
            for a in prometheus.query("ALERTS")
        }
        assert ("RLHFJobFailed", "ConfigError") in firing
        assert not any(name in ("RLHFOperatorDown", "RLHFJobStuck") for name, _ in firing)
        # Both the operator and the trainers were scraped by pod IP.
        up = {
            (s["metric"]["namespace"], s["metric"].get("app_kubernetes_io_name", ""))
            for s in prometheus.query("up == 1")
        }
        assert (system, "rlhf-operator") in up, up
    finally:
        prometheus.stop()
        discovery.stop()


class _InClusterOperator:
    """The chart's operator pod, as Pipeline's ``operator``."""

    def __init__(self, kube, namespace: str) -> None:  # type: ignore[no-untyped-def]
        self.kube = kube
        self.namespace = namespace

    def log_text(self) -> str:
        return self.kube.kubectl(
            "logs", "-n", self.namespace, "deployment/rlhf-operator", check=False
        ).stdout
