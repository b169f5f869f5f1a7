"""The building blocks every API model shares.

Two things live here:

* ``ApiModel``: camelCase aliases for YAML, snake_case in Python, unknown fields
  refused (the apiserver refuses them too under ``kubectl apply``'s strict field
  validation), and cross-field rules checked after parsing.
* ``Rule``: a cross-field rule written once, as the CEL expression the CRD carries
  (so the apiserver refuses bad input before the operator sees it) and as the Python
  predicate the models run (so the operator and local mode refuse the same input with
  the same message). The invalid-manifest tests hold the two halves to each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError, core_schema


@dataclass(frozen=True)
class Rule:
    """A cross-field rule: one CEL expression, the same rule in Python, one message.

    ``field`` names the field (relative to the model that carries the rule, in YAML
    spelling, e.g. ``"fromJob"`` or ``"output.accessModes"``) the apiserver and our
    errors should point at; empty means the object itself.
    """

    cel: str
    check: Callable[[Any], bool]
    message: str
    field: str = ""

    def to_crd(self) -> dict[str, str]:
        rule = {"rule": self.cel, "message": self.message}
        if self.field:
            rule["fieldPath"] = "." + self.field
            rule["reason"] = "FieldValueInvalid"
        return rule


def exactly_one_of(*fields: str, what: str) -> Rule:
    """Exactly one of ``fields`` (YAML names) must be set."""
    names = ", ".join(fields[:-1]) + " or " + fields[-1]
    cel = "[" + ", ".join(f"has(self.{name})" for name in fields) + "].exists_one(x, x)"
    return Rule(
        cel=cel,
        check=lambda model: sum(_is_set(model, name) for name in fields) == 1,
        message=f"{what}: set exactly one of {names}",
    )


def at_most_one_of(*fields: str, what: str) -> Rule:
    """At most one of ``fields`` (YAML names) may be set."""
    names = ", ".join(fields[:-1]) + " or " + fields[-1]
    cel = "[" + ", ".join(f"has(self.{name})" for name in fields) + "].filter(x, x).size() <= 1"
    return Rule(
        cel=cel,
        check=lambda model: sum(_is_set(model, name) for name in fields) <= 1,
        message=f"{what}: set at most one of {names}",
        field=fields[-1],
    )


def _is_set(model: BaseModel, yaml_name: str) -> bool:
    return getattr(model, python_name(type(model), yaml_name)) is not None


def python_name(model_type: type[BaseModel], yaml_name: str) -> str:
    for name, info in model_type.model_fields.items():
        if (info.alias or name) == yaml_name:
            return name
    raise KeyError(f"{model_type.__name__} has no field {yaml_name!r}")


class ListSet:
    """Marks a list of scalars whose items must differ (``labels: [a, a]`` is refused):
    the CRD says ``x-kubernetes-list-type: set`` (the apiserver answers "Duplicate
    value"), the models refuse the same list with the same words."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(_no_duplicates, handler(source))


def _no_duplicates(items: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for item in items:
        if item in seen:
            raise PydanticCustomError(
                "duplicate", "Duplicate value: {value}", {"value": json.dumps(item)}
            )
        seen.append(item)
    return items


class ApiModel(BaseModel):
    """Base of every spec and status model."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        use_attribute_docstrings=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> ApiModel:
        for rule in type(self).rules:
            if not rule.check(self):
                # The field travels in the error's context: field_errors() appends it
                # to the location, as the apiserver does with a rule's fieldPath.
                raise PydanticCustomError("rule", rule.message, {"field": rule.field})
        return self

    def to_manifest(self) -> dict[str, Any]:
        """The YAML/JSON form: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


@dataclass(frozen=True)
class FieldError:
    """One problem in a manifest: where (``spec.model.hub.id``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def field_errors(error: ValidationError, prefix: Iterable[str] = ()) -> list[FieldError]:
    """Turn a pydantic error into field paths spelled the way the apiserver spells them."""
    found = []
    for detail in error.errors(include_url=False):
        location = [*prefix, *detail["loc"]]
        if detail["type"] == "rule" and detail.get("ctx", {}).get("field"):
            # Digits are list indexes, as the apiserver writes them: volumes[0].name.
            location += [
                int(part) if part.isdigit() else part for part in detail["ctx"]["field"].split(".")
            ]
        path = _join_path(location)
        message = detail["msg"]
        if detail["type"] == "extra_forbidden":
            message = f'unknown field "{path}"'
        elif detail["type"] == "missing":
            message = "Required value"
        found.append(FieldError(path, message))
    return found


def _join_path(location: Iterable[str | int]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(("function-", "literal[")) or "[" in part:
            continue  # pydantic's names for union branches: not part of the YAML path
        else:
            path += ("." if path else "") + part
    return path
