"""The operator's calls to the Kubernetes API, each tolerant of the races a controller
meets: objects created twice (409), gone already (404), or changed under us."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .api import GROUP, VERSION, KindInfo

_api: client.ApiClient | None = None


def connect(connections: int = 10) -> None:
    """In a pod: its ServiceAccount; elsewhere: the kubeconfig (KUBECONFIG).

    ``connections``: kept-alive connections to the apiserver; one per reconcile thread,
    or each thread beyond the pool opens (and TLS-handshakes) a new one per request.
    """
    global _api
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    _api = client.ApiClient(configuration)


def api() -> client.ApiClient:
    if _api is None:
        connect()
    assert _api is not None
    return _api


REQUEST_TIMEOUT = (5, 30)
"""(connect, read) seconds: a hung apiserver call must not hold a reconcile thread."""

MERGE_PATCH = "application/merge-patch+json"

_COLLECTIONS = {
    "ConfigMap": "/api/v1/namespaces/{namespace}/configmaps",
    "PersistentVolumeClaim": "/api/v1/namespaces/{namespace}/persistentvolumeclaims",
    "Service": "/api/v1/namespaces/{namespace}/services",
    "Event": "/api/v1/namespaces/{namespace}/events",
    "Job": "/apis/batch/v1/namespaces/{namespace}/jobs",
}


def request(
    method: str,
    path: str,
    body: Any = None,
    query: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """One API call with plain JSON in and out; a non-2xx answer raises ApiException.

    The client's typed API classes are not used: importing CoreV1Api and BatchV1Api
    costs ~25 MB of operator memory, and turning every reply into model objects and
    back into dicts was most of the operator's CPU on a large cluster
    (bench/operator_scale.py). Authentication, TLS and token refresh are the client's.
    """
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    serialized = api().param_serialize(
        method=method,
        resource_path=path,
        query_params=list((query or {}).items()),
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    reply = api().call_api(*serialized, _request_timeout=REQUEST_TIMEOUT)
    data = reply.read() or b""
    if not 200 <= reply.status <= 299:
        raise ApiException.from_response(
            http_resp=reply, body=data.decode("utf-8", "replace"), data=None
        )
    document = json.loads(data) if data else {}
    return document if isinstance(document, dict) else {}


def _custom_path(info: KindInfo, namespace: str, name: str = "") -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{info.plural}"
    return f"{path}/{quote(name)}" if name else path


def _collection(kind: str, namespace: str) -> str:
    return _COLLECTIONS[kind].format(namespace=quote(namespace))


def get_job(info: KindInfo, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return request("GET", _custom_path(info, namespace, name))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


class Conflict(Exception):
    """The object changed since it was read: read it again and recompute."""


def patch_status(
    info: KindInfo,
    namespace: str,
    name: str,
    status: dict[str, Any],
    resource_version: str | None = None,
) -> dict[str, Any] | None:
    """Write status; with ``resource_version`` only if nobody wrote in between.

    The precondition keeps concurrent reconciles (a timer, a Job event) from writing an
    older view over a newer one, and makes each phase change (and its Event) happen once.
    Returns the object as written (None: it was deleted meanwhile).
    """
    patch: dict[str, Any] = {"status": status}
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    try:
        path = _custom_path(info, namespace, name) + "/status"
        return request("PATCH", path, patch, content_type=MERGE_PATCH)
    except ApiException as error:
        if error.status == 409:
            raise Conflict(name) from error
        if error.status != 404:  # deleted meanwhile: nothing to report on
            raise
    return None


def get_batch_job(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return request("GET", f"{_collection('Job', namespace)}/{quote(name)}")
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def get(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """A ConfigMap, claim, Service or Job by name; None when there is none."""
    if kind not in _COLLECTIONS or kind == "Event":
        raise ValueError(f"cannot read {kind}")
    try:
        return request("GET", f"{_collection(kind, namespace)}/{quote(name)}")
    except ApiException as error:
        if error.status == 404:
            return None
        raise


class Invalid(Exception):
    """The apiserver refused an object as invalid (422): sending it again cannot help."""


def create(body: dict[str, Any]) -> dict[str, Any] | None:
    """Create an object and return it as created; None when one of its name exists
    already: another reconcile was first, or it is someone else's (read it with ``get``
    to know whose). Raises Invalid, with the apiserver's message, when it is refused as
    invalid."""
    kind = body["kind"]
    if kind not in _COLLECTIONS or kind == "Event":
        raise ValueError(f"cannot create {kind}")
    try:
        return request("POST", _collection(kind, body["metadata"]["namespace"]), body)
    except ApiException as error:
        if error.status == 409:
            return None
        if error.status == 422:
            raise Invalid(_message(error)) from error
        raise


def _message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return str(error.body or error.reason)


def patch_batch_job(namespace: str, name: str, patch: dict[str, Any]) -> None:
    try:
        path = f"{_collection('Job', namespace)}/{quote(name)}"
        request("PATCH", path, patch, content_type=MERGE_PATCH)
    except ApiException as error:
        if error.status != 404:
            raise


def delete_batch_job(namespace: str, name: str, uid: str) -> None:
    """Delete this Job (the uid: never a newer one of the name) and, first, its pods
    (propagationPolicy Foreground); gone or replaced already is fine."""
    body = {"propagationPolicy": "Foreground", "preconditions": {"uid": uid}}
    try:
        request("DELETE", f"{_collection('Job', namespace)}/{quote(name)}", body)
    except ApiException as error:
        if error.status not in (404, 409):
            raise


def patch_workload(api_version: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
    """Merge-patch one of Kueue's Workloads (at the version the watch saw it in)."""
    try:
        path = f"/apis/{api_version}/namespaces/{quote(namespace)}/workloads/{quote(name)}"
        request("PATCH", path, patch, content_type=MERGE_PATCH)
    except ApiException as error:
        if error.status != 404:  # gone with its Job: nothing to switch
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
        request("POST", _collection("Event", metadata["namespace"]), event)
    except (ApiException, OSError, ValueError):
        pass  # events are best effort: never fail a reconcile over one


def warning_events(namespace: str, uid: str) -> list[dict[str, Any]]:
    """The Warning Events about one object (a pod, a Job), trimmed to type, reason,
    message and when last seen; none when they cannot be read (best effort, like posting)."""
    query = {"fieldSelector": f"involvedObject.uid={uid},type=Warning", "limit": "50"}
    try:
        found = request("GET", _collection("Event", namespace), query=query)
    except (ApiException, OSError, ValueError):
        return []
    return [
        {
            "type": event.get("type"),
            "reason": event.get("reason"),
            "message": event.get("message"),
            "lastSeen": (event.get("series") or {}).get("lastObservedTime")
            or event.get("lastTimestamp")
            or event.get("eventTime")
            or event.get("firstTimestamp"),
        }
        for event in found.get("items") or []
        if isinstance(event, dict)
    ]


def read_progress(pod_ip: str, port: int, timeout: float) -> dict[str, Any] | None:
    """The trainer's /progress document, or None when it does not answer (yet)."""
    try:
        with urllib.request.urlopen(f"http://{pod_ip}:{port}/progress", timeout=timeout) as reply:
            document = json.loads(reply.read())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None
