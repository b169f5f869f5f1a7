"""Kubernetes' own types inside our spec (affinity, topology spread, volumes, mounts).

Fields such as ``spec.pod.affinity`` take the core/v1 type as a pod does, checked
against Kubernetes' own schema rather than accepted as free-form objects: the apiserver
checks them with the CRD (the schemas are embedded into it, see crds.py) and the models
check them with ``check_object`` below (local mode, ``rlhf validate``, the operator).

The schemas come from the JSON schemas ``kubernetes-validate`` ships (Kubernetes 1.37),
turned into structural CRD schemas: references resolved, nullable types made plain,
quantities and int-or-strings as ``x-kubernetes-int-or-string``, each description cut to
its first sentence (the whole types with their descriptions would take the CRDs near the
256 KiB a client-side ``kubectl apply`` can store), and an ephemeral volume's claim
metadata narrowed to the labels and annotations Kubernetes allows there. They are
vendored in ``kubernetes_types.json`` so the API needs nothing but pydantic; regenerate
with ``make kubernetes-types`` (``write_vendored()``), then ``make crds``; a unit test
fails on drift.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

KUBERNETES_VERSION = "v1.37.0"
VENDORED = Path(__file__).with_name("kubernetes_types.json")
TYPES = ("Affinity", "TopologySpreadConstraint", "Volume", "VolumeMount")
"""The core/v1 types the spec embeds."""

Schema = dict[str, Any]


@dataclass(frozen=True)
class KubernetesType:
    """Marks a field (``Annotated[dict[str, Any], KubernetesType("Affinity")]``) as holding
    a core/v1 object: crds.py embeds the type's schema, ``check_object`` validates it."""

    name: str

    def schema(self) -> Schema:
        return structural_schemas()[self.name]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.validate, handler(source))

    def validate(self, value: Any) -> Any:
        """Refuse what the apiserver would refuse; the error names the field inside."""
        problem = check_object(value, self.schema())
        if problem is not None:
            path, message = problem
            raise PydanticCustomError("rule", message, {"field": path})
        return value


@functools.cache
def structural_schemas() -> dict[str, Schema]:
    loaded: dict[str, Schema] = json.loads(VENDORED.read_text())
    return loaded


# --- validation ----------------------------------------------------------------------

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def check_object(value: Any, schema: Schema, path: str = "") -> tuple[str, str] | None:
    """The first place ``value`` breaks a structural ``schema``, as (dotted path, list
    indexes as numbers: ``volumes.0.name``; message), in the apiserver's words (unknown
    fields refused, as strict field validation does)."""
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return path, "must be an integer or a string"
        return None
    expected = schema.get("type")
    if expected is not None:
        if isinstance(value, bool) and expected in ("integer", "number"):
            return path, f"must be of type {expected}"
        if not isinstance(value, _JSON_TYPES[expected]):
            return path, f"must be of type {expected}"
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(f'"{option}"' for option in schema["enum"])
        return path, f"Unsupported value: {json.dumps(value)}: supported values: {allowed}"
    if isinstance(value, str):
        return _check_string(value, schema, path)
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return path, f"must have at most {schema['maxItems']} items"
        for index, item in enumerate(value):
            problem = check_object(item, schema.get("items", {}), _join(path, str(index)))
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        return _check_mapping(value, schema, path)
    return None


def _check_string(value: str, schema: Schema, path: str) -> tuple[str, str] | None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return path, f"may not be more than {schema['maxLength']} bytes"
    if "pattern" in schema and not re.search(schema["pattern"], value):
        return path, f"should match '{schema['pattern']}'"
    return None


def _check_mapping(value: dict[str, Any], schema: Schema, path: str) -> tuple[str, str] | None:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return None
    properties: Schema = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            return _join(path, name), "Required value"
    for name, item in value.items():
        child = _join(path, name)
        if name in properties:
            item_schema = properties[name]
        elif isinstance(schema.get("additionalProperties"), dict):
            item_schema = schema["additionalProperties"]
        else:
            return child, f'unknown field "{name}"'
        problem = check_object(item, item_schema, child)
        if problem:
            return problem
    return None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# --- generation (dev time, from kubernetes-validate) ---------------------------------

_CORE = "io.k8s.api.core.v1."
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_FORMATS = {"int32", "int64", "double", "float", "byte", "date-time"}
_DNS_LABEL = {"maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
_POD_VALIDATION: dict[str, dict[str, Schema]] = {
    "Volume": {"name": _DNS_LABEL},
    "VolumeMount": {
        "name": _DNS_LABEL,
        "mountPath": {"maxLength": 4096},
        "subPath": {"maxLength": 4096},
    },
}
"""What the apiserver checks when it validates a pod (volume names are DNS labels) and
bounds that keep the CRD's CEL rules over these fields cheap, added to the schemas."""


def build_from_kubernetes_validate() -> dict[str, Schema]:
    """The structural schemas of ``TYPES`` from kubernetes-validate's JSON schemas."""
    import kubernetes_validate  # type: ignore[import-untyped]  # dev only: the generator

    folder = (
        Path(kubernetes_validate.__file__).parent
        / "kubernetes-json-schema"
        / f"{KUBERNETES_VERSION}-local"
    )
    definitions = json.loads((folder / "_definitions.json").read_text())["$defs"]
    schemas = {
        name: _structural(definitions[_CORE + name], definitions, frozenset({_CORE + name}))
        for name in TYPES
    }
    for name, fields in _POD_VALIDATION.items():
        for field, bounds in fields.items():
            schemas[name]["properties"][field].update(bounds)
    return schemas


def _first_sentence(text: str) -> str:
    match = re.match(r"(.+?\.)(\s|$)", text, re.DOTALL)
    return " ".join((match.group(1) if match else text).split())


def _structural(schema: Schema, definitions: Schema, seen: frozenset[str]) -> Schema:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            raise ValueError(f"{name} is recursive: no structural schema")
        if name == _OBJECT_META:
            resolved = _labels_and_annotations()
        else:
            resolved = _structural(definitions[name], definitions, seen | {name})
        if schema.get("description"):
            resolved["description"] = _first_sentence(schema["description"])
        return resolved
    out: Schema = {}
    if "oneOf" in schema:  # Quantity, IntOrString: a string or a number
        out["x-kubernetes-int-or-string"] = True
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next(option for option in kind if option != "null")
    if kind:
        out["type"] = kind
    if schema.get("description"):
        out["description"] = _first_sentence(schema["description"])
    if schema.get("format") in _FORMATS:
        out["format"] = schema["format"]
    if "enum" in schema:
        out["enum"] = [option for option in schema["enum"] if option is not None]
    if "properties" in schema:
        out["properties"] = {
            name: _structural(child, definitions, seen)
            for name, child in schema["properties"].items()
        }
    if schema.get("required"):
        out["required"] = list(schema["required"])
    if "items" in schema:
        out["items"] = _structural(schema["items"], definitions, seen)
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(schema["additionalProperties"], definitions, seen)
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _labels_and_annotations() -> Schema:
    strings = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        "type": "object",
        "properties": {
            "labels": {**strings, "description": "Labels of the claim."},
            "annotations": {**strings, "description": "Annotations of the claim."},
        },
    }


def render_vendored(schemas: dict[str, Schema]) -> str:
    return json.dumps(schemas, indent=1, sort_keys=True) + "\n"


def write_vendored() -> Path:
    """Regenerate kubernetes_types.json (``make kubernetes-types``)."""
    VENDORED.write_text(render_vendored(build_from_kubernetes_validate()))
    return VENDORED
