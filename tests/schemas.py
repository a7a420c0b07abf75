"""Payload validation against the wire-protocol schemas in tests/protocols/.

`errors(obj, "openai:CreateChatCompletionResponse")` checks against a component of the
OpenAI OpenAPI document; `errors(obj, "anthropic.Message")` against a JSON Schema file.

Two adjustments make the OpenAI document usable as JSON Schema: OAS 3.0's
`nullable: true` (still used in places) becomes `anyOf [..., null]`; and in lenient mode
every optional property may also be null, as real API payloads often send null for fields
the spec types as non-nullable.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

PROTOCOLS = Path(__file__).resolve().parent / "protocols"
_OPENAI_URI = "urn:creditgate:openai-openapi"


def _rewrite(node: Any, each: Callable[[dict[str, Any]], Any]) -> Any:
    """`node` with `each` applied to every object in it, innermost first."""
    if isinstance(node, list):
        return [_rewrite(v, each) for v in node]
    if not isinstance(node, dict):
        return node
    return each({k: _rewrite(v, each) for k, v in node.items()})


def _nullable_as_any_of(out: dict[str, Any]) -> Any:
    if out.pop("nullable", False) is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


def _optional_may_be_null(out: dict[str, Any]) -> Any:
    props = out.get("properties")
    required = out.get("required")
    needed = set(required) if isinstance(required, list) and all(isinstance(r, str) for r in required) else set()
    if isinstance(props, dict) and props and all(isinstance(v, dict) for v in props.values()):
        out["properties"] = {k: v if k in needed else {"anyOf": [v, {"type": "null"}]} for k, v in props.items()}
    return out


@functools.cache
def _openai_registry(lenient: bool) -> Registry[Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = _rewrite(yaml.load((PROTOCOLS / "openai-openapi.yaml").read_text(), Loader=loader), _nullable_as_any_of)
    if lenient:
        spec = _rewrite(spec, _optional_may_be_null)
    return Registry().with_resource(_OPENAI_URI, Resource(contents=spec, specification=DRAFT202012))


@functools.cache
def validator(name: str, lenient: bool = False) -> Draft202012Validator:
    if name.startswith("openai:"):
        ref = {"$ref": f"{_OPENAI_URI}#/components/schemas/{name.split(':', 1)[1]}"}
        return Draft202012Validator(ref, registry=_openai_registry(lenient))
    schema = json.loads((PROTOCOLS / "schemas" / f"{name}.schema.json").read_text())
    return Draft202012Validator(schema)


def errors(obj: Any, name: str, lenient: bool = False) -> list[ValidationError]:
    return sorted(validator(name, lenient).iter_errors(obj), key=lambda e: list(e.absolute_path))
