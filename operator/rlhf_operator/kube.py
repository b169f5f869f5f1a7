"""The operator's calls to the Kubernetes API, each tolerant of the races a controller
meets: objects created twice (409), gone already (404), or changed under us."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .api import GROUP, VERSION, KindInfo

_api: client.ApiClient | None = None


def connect() -> None:
    """In a pod: its ServiceAccount; elsewhere: the kubeconfig (KUBECONFIG)."""
    global _api
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    _api = client.ApiClient()


def api() -> client.ApiClient:
    if _api is None:
        connect()
    assert _api is not None
    return _api


def core() -> client.CoreV1Api:
    return client.CoreV1Api(api())


def batch() -> client.BatchV1Api:
    return client.BatchV1Api(api())


def custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api())


def get_job(info: KindInfo, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return custom().get_namespaced_custom_object(GROUP, VERSION, namespace, info.plural, name)  # type: ignore[no-any-return]
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def list_jobs(info: KindInfo, namespace: str) -> list[dict[str, Any]]:
    found = custom().list_namespaced_custom_object(GROUP, VERSION, namespace, info.plural)
    return list(found.get("items", []))


class Conflict(Exception):
    """The object changed since it was read: read it again and recompute."""


def patch_status(
    info: KindInfo,
    namespace: str,
    name: str,
    status: dict[str, Any],
    resource_version: str | None = None,
) -> None:
    """Write status; with ``resource_version`` only if nobody wrote in between.

    The precondition keeps concurrent reconciles (a timer, a Job event) from writing an
    older view over a newer one, and makes each phase change (and its Event) happen once.
    """
    patch: dict[str, Any] = {"status": status}
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    try:
        custom().patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, info.plural, name, patch
        )
    except ApiException as error:
        if error.status == 409:
            raise Conflict(name) from error
        if error.status != 404:  # deleted meanwhile: nothing to report on
            raise


def get_batch_job(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        job = batch().read_namespaced_job(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return api().sanitize_for_serialization(job)  # type: ignore[no-any-return]


def list_pods(namespace: str, job_name: str) -> list[dict[str, Any]]:
    pods = core().list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}"
    )
    return [api().sanitize_for_serialization(pod) for pod in pods.items]


def create(body: dict[str, Any]) -> bool:
    """Create an object; False when it already exists (another reconcile was first)."""
    namespace = body["metadata"]["namespace"]
    kind = body["kind"]
    try:
        if kind == "ConfigMap":
            core().create_namespaced_config_map(namespace, body)
        elif kind == "PersistentVolumeClaim":
            core().create_namespaced_persistent_volume_claim(namespace, body)
        elif kind == "Service":
            core().create_namespaced_service(namespace, body)
        elif kind == "Job":
            batch().create_namespaced_job(namespace, body)
        else:
            raise ValueError(f"cannot create {kind}")
    except ApiException as error:
        if error.status == 409:
            return False
        raise
    return True


def patch_batch_job(namespace: str, name: str, patch: dict[str, Any]) -> None:
    try:
        batch().patch_namespaced_job(name, namespace, patch)
    except ApiException as error:
        if error.status != 404:
            raise


def post_event(
    info: KindInfo, body: dict[str, Any], event_type: str, reason: str, message: str
) -> None:
    """A core/v1 Event on the job, as `kubectl describe` shows them."""
    metadata = body["metadata"]
    stamp = datetime.now(UTC)
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": info.kind,
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
        },
        "type": event_type,
        "reason": reason[:128],
        "message": message[:1024],
        "source": {"component": "rlhf-operator"},
        "reportingComponent": "rlhf-operator",
        "reportingInstance": "rlhf-operator",
        "firstTimestamp": stamp.isoformat(),
        "lastTimestamp": stamp.isoformat(),
        "count": 1,
    }
    try:
        core().create_namespaced_event(metadata["namespace"], event)
    except ApiException:
        pass  # events are best effort: never fail a reconcile over one


def read_progress(pod_ip: str, port: int, timeout: float) -> dict[str, Any] | None:
    """The trainer's /progress document, or None when it does not answer (yet)."""
    try:
        with urllib.request.urlopen(f"http://{pod_ip}:{port}/progress", timeout=timeout) as reply:
            document = json.loads(reply.read())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None
