"""Validate bodies against the official OpenAI OpenAPI spec (tests/data/openai-openapi.yaml).

The spec is OpenAPI 3.1, so its schemas are JSON Schema 2020-12 except for
OpenAPI's leftover `nullable: true`, which JSON Schema validators silently
ignore (a nullable field would then reject `null`). That is the only rewrite:
the schemas are otherwise used as published, so a body the gateway returns
must be exactly as strict as the OpenAI API's own.

Parsing the 3 MB YAML costs about a second even with libyaml, and every test
process would pay it, so the rewritten schemas are cached as JSON under
`.cache/openai-openapi/`, keyed by the spec's hash and the rewrite's version.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parents[1]
SPEC_PATH = ROOT / "tests" / "data" / "openai-openapi.yaml"
CACHE_DIR = ROOT / ".cache" / "openai-openapi"
SPEC_URI = "urn:spotgate:openai-openapi"
# Bump when _rewrite_nullable (or what is cached) changes, so stale caches are ignored.
REWRITE_VERSION = 1
MAX_REPORTED_ERRORS = 20

# Keywords whose value maps names to subschemas: a key called "nullable" in
# there is a property name, not OpenAPI's keyword.
_SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
# Keywords whose value is a list of subschemas.
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
# Keywords whose value is one subschema.
_SCHEMA_SINGLE = frozenset(
    {
        "items",
        "additionalProperties",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)


def _rewrite_nullable(schema: Any) -> Any:
    """Turn OpenAPI's `nullable: true` into JSON Schema's `anyOf [schema, null]`.

    Wrapping (rather than adding "null" to `type`) keeps `enum`, `$ref` and
    `required` from rejecting the null the spec allows.
    """
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _rewrite_nullable(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_rewrite_nullable(sub) for sub in value]
        elif key in _SCHEMA_SINGLE:
            out[key] = _rewrite_nullable(value)
        else:
            out[key] = value
    nullable = out.pop("nullable", None)
    if nullable is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


class _SpecLoader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """Keeps YAML timestamps as strings: the spec's examples hold dates JSON cannot encode."""


_SpecLoader.add_constructor(
    "tag:yaml.org,2002:timestamp", yaml.constructor.SafeConstructor.construct_yaml_str
)


def _parse_spec(raw: bytes) -> dict[str, Any]:
    spec = yaml.load(raw, Loader=_SpecLoader)  # a SafeLoader subclass
    schemas = spec["components"]["schemas"]
    return {name: _rewrite_nullable(schema) for name, schema in schemas.items()}


@cache
def schemas() -> dict[str, Any]:
    """All `components/schemas`, nullable-rewritten, parsed once per process."""
    raw = SPEC_PATH.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()[:16]
    cached = CACHE_DIR / f"{digest}-v{REWRITE_VERSION}.json"
    try:
        return json.loads(cached.read_bytes())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        pass
    parsed = _parse_spec(raw)
    try:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=CACHE_DIR, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(parsed, handle, separators=(",", ":"))
        os.replace(tmp, cached)
    except OSError:
        pass  # a read-only checkout still validates, just slower
    return parsed


@cache
def _registry() -> Registry:
    document = {"components": {"schemas": schemas()}}
    resource = Resource(contents=document, specification=DRAFT202012)
    return Registry().with_resource(SPEC_URI, resource)


@cache
def validator(schema_name: str) -> Draft202012Validator:
    """A validator for one named schema; its `$ref`s resolve inside the spec."""
    if schema_name not in schemas():
        raise KeyError(f"{schema_name!r} is not in components/schemas of {SPEC_PATH.name}")
    ref = {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(ref, registry=_registry())


def _where(error: ValidationError) -> str:
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _closest(error: ValidationError) -> ValidationError:
    """The branch complaint that explains an anyOf/oneOf failure best.

    "is not of type 'null'" is true of every nullable field that has a value,
    so it never explains anything when another branch has a complaint.
    """
    while error.context:
        informative = [
            sub
            for sub in error.context
            if not (sub.validator == "type" and sub.validator_value == "null")
        ]
        error = best_match(informative or error.context)
    return error


def _short(message: str) -> str:
    """Keeps one error to a line: messages embed the whole offending value."""
    return message if len(message) <= 300 else message[:300] + "..."


def _describe(error: ValidationError) -> str:
    line = f"{_where(error)}: {_short(error.message)}"
    if error.context:
        closest = _closest(error)
        line += f"\n    closest: {_where(closest)}: {_short(closest.message)}"
    return line


def errors(schema_name: str, instance: Any) -> list[str]:
    """Readable descriptions of every way `instance` breaks the schema, most relevant first."""
    found = sorted(validator(schema_name).iter_errors(instance), key=_where)
    return [_describe(error) for error in found]


def validate(schema_name: str, instance: Any) -> None:
    """Assert that `instance` is valid under `components/schemas/<schema_name>`."""
    problems = errors(schema_name, instance)
    if not problems:
        return
    shown = problems[:MAX_REPORTED_ERRORS]
    more = len(problems) - len(shown)
    listing = "\n".join(f"  - {problem}" for problem in shown)
    if more:
        listing += f"\n  ... and {more} more"
    body = json.dumps(instance, default=str)
    if len(body) > 2000:
        body = body[:2000] + "..."
    raise AssertionError(
        f"body does not validate against {schema_name} ({len(problems)} error(s)):\n"
        f"{listing}\nbody: {body}"
    )
