"""A child the apiserver refuses as invalid fails the job with the apiserver's words
(issue 14, item 9): it is never sent again and again with no status, as a 422 once was
(Kopf retried it forever). The CRD refuses every such spec known
(tests/cluster/test_render_property.py); this is the net for one it does not."""

from __future__ import annotations

import copy
from typing import Any

from rlhf_operator import kube, reconcile

from tests.unit.test_ownership import INFO, SETTINGS, FakeApi, _manifest

REFUSAL = 'Service "x-sft" is invalid: metadata.name: Invalid value: "x-sft": a DNS-1035 label'


def test_a_refused_child_fails_the_job_once_with_the_apiservers_message(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    api = FakeApi(monkeypatch)
    created = api.create

    def create(body: dict[str, Any]) -> dict[str, Any] | None:
        if body["kind"] == "Job":
            raise kube.Invalid(REFUSAL)
        return created(body)

    monkeypatch.setattr(kube, "create", create)
    assert reconcile.reconcile(INFO, _manifest(), SETTINGS, api.view()) == "Failed"
    status = api.statuses[-1]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == reconcile.CHILD_INVALID
    assert REFUSAL in failed["message"] and REFUSAL in status["message"]
    assert api.events == [("Warning", reconcile.CHILD_INVALID, status["message"])]
    # Final: the next reconcile creates nothing and posts nothing.
    failed_job = copy.deepcopy(_manifest())
    failed_job["status"] = status
    before = list(api.created)
    assert reconcile.reconcile(INFO, failed_job, SETTINGS, api.view()) == "Failed"
    assert api.created == before and len(api.events) == 1
