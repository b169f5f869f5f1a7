"""The generated CRDs: in sync with the models, structural, documented."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf_operator.api import KINDS
from rlhf_operator.cli import main
from rlhf_operator.crds import crd_documents, stale_crds

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_crds_match_the_models() -> None:
    stale = stale_crds(ROOT / "crds")
    assert not stale, f"run `make crds`: {stale} drifted from the API models"


def test_check_command_reports_drift(tmp_path: Path) -> None:
    assert main(["crds", "--output", str(tmp_path)]) == 0
    assert main(["crds", "--check", "--output", str(tmp_path)]) == 0
    first = sorted(tmp_path.iterdir())[0]
    first.write_text(first.read_text().replace("description: Kind of", "description: Type of"))
    assert main(["crds", "--check", "--output", str(tmp_path)]) == 1


def _walk(schema: dict[str, Any], path: str):  # type: ignore[no-untyped-def]
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def _root(document: dict[str, Any]) -> dict[str, Any]:
    return document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_every_field_has_a_description_and_a_type() -> None:
    for document in crd_documents():
        for path, schema in _walk(_root(document), document["spec"]["names"]["kind"]):
            # A quantity inside an embedded Kubernetes type is an int-or-string: no type.
            assert "type" in schema or schema.get("x-kubernetes-int-or-string"), path
            if path.count(".") and not path.endswith(("[]", "}", ".metadata")):
                assert schema.get("description"), f"{path} has no description"


def test_schemas_are_structural() -> None:
    forbidden = {"anyOf", "oneOf", "allOf", "$ref", "nullable", "title", "$defs"}
    for document in crd_documents():
        for path, schema in _walk(_root(document), "root"):
            assert not forbidden & schema.keys(), path


def test_names_categories_and_printer_columns() -> None:
    by_kind = {doc["spec"]["names"]["kind"]: doc for doc in crd_documents()}
    assert set(by_kind) == {"SFTJob", "RewardModelJob", "PPOJob", "DPOJob"}
    assert by_kind["SFTJob"]["spec"]["names"]["shortNames"] == ["sft"]
    assert by_kind["RewardModelJob"]["spec"]["names"]["shortNames"] == ["rmjob", "rm"]
    assert by_kind["PPOJob"]["spec"]["names"]["shortNames"] == ["ppo"]
    assert by_kind["DPOJob"]["spec"]["names"]["shortNames"] == ["dpo"]
    for document in by_kind.values():
        assert document["spec"]["names"]["categories"] == ["rlhf"]
        version = document["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        columns = [column["name"] for column in version["additionalPrinterColumns"]]
        assert columns[:3] == ["Phase", "Progress", "Metric"] and columns[-1] == "Age"


def test_defaults_and_bounds_come_from_the_models() -> None:
    schema = _root(crd_documents()[0])["properties"]["spec"]["properties"]
    training = schema["training"]
    assert training["default"] == {}
    assert training["properties"]["learningRate"]["default"] == 2e-5
    assert training["properties"]["learningRate"]["exclusiveMinimum"] is True
    assert schema["task"]["enum"] == ["causal-lm", "sequence-classification"]
    assert schema["output"]["properties"]["accessModes"]["default"] == ["ReadWriteOnce"]
    assert len(KINDS) == len(crd_documents())
