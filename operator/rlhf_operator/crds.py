"""Generate the CustomResourceDefinitions from the API models.

The models are the source of truth; this walks their fields and writes structural
OpenAPI v3 schemas with descriptions, defaults, enums, bounds and the models' CEL
rules. ``rlhf crds`` writes them into crds/ (and the Helm chart); a test fails when
the checked-in files drift from the models.
"""

from __future__ import annotations

import copy
import datetime
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .api import CATEGORY, GROUP, KINDS, VERSION, ApiModel, KindInfo
from .api.base import ListSet
from .api.job import immutable_field_rules
from .api.kubernetes_types import KubernetesType

Schema = dict[str, Any]


def crd_documents() -> list[dict[str, Any]]:
    """One CRD manifest per kind."""
    return [crd_for(info) for info in KINDS]


def crd_for(info: KindInfo) -> dict[str, Any]:
    model = info.model
    root: Schema = {
        "type": "object",
        "description": _describe(model.__doc__),
        "properties": {
            "apiVersion": {"type": "string", "description": "API group and version."},
            "kind": {"type": "string", "description": "Kind of the resource."},
            "metadata": {"type": "object"},
            "spec": _spec_schema(model),
            "status": _field_schema(model.model_fields["status"]),
        },
        "required": ["spec"],
    }
    rules = [rule.to_crd() for rule in model.rules]
    if rules:
        root["x-kubernetes-validations"] = rules
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": info.crd_name,
            "labels": {"app.kubernetes.io/part-of": "rlhf-operator"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        _printer_column(column) for column in info.printer_columns()
                    ],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def _spec_schema(model: Any) -> Schema:
    schema = _field_schema(model.model_fields["spec"])
    spec_model = model.model_fields["spec"].annotation
    schema.setdefault("x-kubernetes-validations", []).extend(immutable_field_rules(spec_model))
    return schema


def _printer_column(column: Any) -> dict[str, Any]:
    rendered = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
    if column.description:
        rendered["description"] = column.description
    if column.priority:
        rendered["priority"] = column.priority
    return rendered


def model_schema(model: type[BaseModel]) -> Schema:
    """The structural schema of one model: properties, required, defaults, rules."""
    properties: Schema = {}
    required = []
    for name, info in model.model_fields.items():
        properties[info.alias or name] = _field_schema(info)
        if info.is_required():
            required.append(info.alias or name)
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    rules = getattr(model, "rules", ())
    if issubclass(model, ApiModel) and rules and model.__name__ not in _ROOTS:
        schema["x-kubernetes-validations"] = [rule.to_crd() for rule in rules]
    return schema


_ROOTS = {info.model.__name__ for info in KINDS}


def _field_schema(info: FieldInfo) -> Schema:
    schema = _type_schema(info.annotation, info.metadata)
    schema["description"] = _describe(info.description)
    if not info.is_required():
        default = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            schema["default"] = {}  # the apiserver then fills in the nested defaults
        elif default is not None:
            schema["default"] = _plain(default)
    if schema.get("type") == "array" and _is_condition_list(info):
        schema["x-kubernetes-list-type"] = "map"
        schema["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def _is_condition_list(info: FieldInfo) -> bool:
    args = typing.get_args(info.annotation)
    return bool(args) and getattr(args[0], "__name__", "") == "Condition"


def _type_schema(annotation: Any, metadata: list[Any]) -> Schema:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        inner_metadata = [*metadata]
        for extra in args[1:]:
            inner_metadata.extend(extra.metadata if isinstance(extra, FieldInfo) else [extra])
        return _type_schema(args[0], inner_metadata)
    if origin in (typing.Union, types.UnionType):
        present = [arg for arg in args if arg is not type(None)]
        if len(present) != 1:
            raise TypeError(f"unions other than Optional are not structural: {annotation}")
        return _type_schema(present[0], metadata)
    embedded = [item for item in metadata if isinstance(item, KubernetesType)]
    if embedded:
        return copy.deepcopy(embedded[0].schema())
    if origin is typing.Literal:
        return {"type": "string", "enum": list(args)}
    if origin is list:
        schema: Schema = {"type": "array", "items": _type_schema(args[0], [])}
    elif origin is dict:
        schema = {"type": "object", "additionalProperties": _type_schema(args[1], [])}
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        schema = model_schema(annotation)
    elif annotation is bool:
        schema = {"type": "boolean"}
    elif annotation is int:
        schema = {"type": "integer", "format": "int64"}
    elif annotation is float:
        schema = {"type": "number"}
    elif annotation is str:
        schema = {"type": "string"}
    elif annotation is datetime.datetime:
        schema = {"type": "string", "format": "date-time"}
    else:
        raise TypeError(f"no CRD schema for {annotation!r}")
    _apply_constraints(schema, metadata)
    return schema


def _apply_constraints(schema: Schema, metadata: list[Any]) -> None:
    kind = schema["type"]
    for constraint in metadata:
        if isinstance(constraint, annotated_types.Ge):
            schema["minimum"] = constraint.ge
        elif isinstance(constraint, annotated_types.Gt):
            schema["minimum"] = constraint.gt
            schema["exclusiveMinimum"] = True
        elif isinstance(constraint, annotated_types.Le):
            schema["maximum"] = constraint.le
        elif isinstance(constraint, annotated_types.Lt):
            schema["maximum"] = constraint.lt
            schema["exclusiveMaximum"] = True
        elif isinstance(constraint, annotated_types.MinLen):
            key = {"string": "minLength", "array": "minItems", "object": "minProperties"}[kind]
            schema[key] = constraint.min_length
        elif isinstance(constraint, annotated_types.MaxLen):
            key = {"string": "maxLength", "array": "maxItems", "object": "maxProperties"}[kind]
            schema[key] = constraint.max_length
        elif isinstance(constraint, ListSet):
            schema["x-kubernetes-list-type"] = "set"
        elif hasattr(constraint, "pattern") and constraint.pattern is not None:
            schema["pattern"] = constraint.pattern


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _describe(text: str | None) -> str:
    if not text:
        return ""
    return " ".join(text.split())


def file_name(info: KindInfo) -> str:
    return f"{GROUP}_{info.plural}.yaml"


def render(document: dict[str, Any]) -> str:
    header = "# Generated by `rlhf crds` from operator/rlhf_operator/api. Do not edit.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=100)


def write_crds(directory: Path) -> list[Path]:
    """Write one YAML file per kind into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for info, document in zip(KINDS, crd_documents(), strict=True):
        path = directory / file_name(info)
        path.write_text(render(document))
        written.append(path)
    return written


def stale_crds(directory: Path) -> list[Path]:
    """Files in ``directory`` that differ from what the models generate."""
    return [
        directory / file_name(info)
        for info, document in zip(KINDS, crd_documents(), strict=True)
        if not (directory / file_name(info)).exists()
        or (directory / file_name(info)).read_text() != render(document)
    ]
