"""spec.pod on a real node (issue 14, item 13): a job set up as an OpenShift restricted-v2
namespace runs it (no uid or gid of ours; an arbitrary uid from the namespace's range, gid 0,
the range's fsGroup, as the SCC would assign them) trains to Succeeded from the trainer
image built from our Dockerfile, with an extra emptyDir mounted and a pod annotation and
label. (tests/unit/test_pod_settings.py checks the rendering; tests/cluster/test_crds.py the
apiserver's refusals.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.node.test_operator_on_a_node import _checkpoint_appears, _long_sft

pytestmark = pytest.mark.cluster

NAMESPACE_UID = 1000680000
"""The first uid of an OpenShift namespace's range (openshift.io/sa.scc.uid-range), which
restricted-v2 also uses as the fsGroup."""


def _process_ids(pid: int) -> dict[str, list[int]]:
    """Uid, Gid and Groups of a host process, from /proc (real, effective, saved, fs)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {
        name: [int(value) for value in fields[name].split()] for name in ("Uid", "Gid", "Groups")
    }


def _mounts(pid: int) -> dict[str, str]:
    """Mount point -> mount options of a process's mount namespace."""
    mounts = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        parts = line.split()
        mounts[parts[4]] = parts[5]
    return mounts


@pytest.mark.timeout(1500)
def test_an_openshift_style_job_runs_under_an_arbitrary_uid_with_gid_0(pipeline) -> None:
    job = _long_sft("openshift", steps=300)
    job["spec"]["pod"] = {
        "securityContext": {
            "assignedByPlatform": True,
            # What restricted-v2 fills in (here nothing would): the namespace's uid and
            # fsGroup; no runAsGroup, so the process gets gid 0.
            "runAsUser": NAMESPACE_UID,
            "fsGroup": NAMESPACE_UID,
        },
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}}],
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
        "annotations": {"sidecar.istio.io/inject": "false"},
        "labels": {"team": "alignment"},
    }
    pipeline.apply(job)
    _checkpoint_appears(pipeline, "openshift-sft-output", 50)
    [pod] = pipeline.running()
    trainer = pipeline.node.container_pid(pipeline.namespace, pod)
    ids = _process_ids(trainer)
    assert set(ids["Uid"]) == {NAMESPACE_UID}, ids
    assert set(ids["Gid"]) == {0}, ids
    assert NAMESPACE_UID in ids["Groups"], ids
    mounts = _mounts(trainer)
    assert mounts["/scratch"].startswith("rw"), mounts
    assert mounts["/"].startswith("ro"), mounts  # the root filesystem stays read-only

    done = pipeline.wait_for_phase("sftjob", "openshift", "Succeeded", 900)  # slow under load
    assert done["status"]["progress"]["step"] == 300
    body = pipeline.get("pod", pod)
    assert body is not None
    assert body["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert body["metadata"]["labels"]["team"] == "alignment"
    assert body["metadata"]["labels"]["rlhf.dev/job"] == "openshift"
    context = body["spec"]["securityContext"]
    assert context["runAsUser"] == NAMESPACE_UID and "runAsGroup" not in context, context
    assert context["fsGroupChangePolicy"] == "OnRootMismatch"
    [status] = body["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 0
    # The model was written by the arbitrary uid into the claim the kubelet handed to the
    # fsGroup (its files take the fsGroup from the claim's setgid root, or gid 0).
    claim = pipeline.claim_folder("openshift-sft-output")
    [model] = [path.parent for path in claim.rglob("config.json") if path.parent.name == "model"]
    written = [path.stat() for path in model.iterdir()]
    assert written and {stat.st_uid for stat in written} == {NAMESPACE_UID}
    assert {stat.st_gid for stat in written} <= {0, NAMESPACE_UID}
