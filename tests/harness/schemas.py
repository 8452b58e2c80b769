"""CRDs and custom resources the way apiextensions-apiserver treats them: structural, pruned, defaulted, validated.

Without this the harness stored a custom resource exactly as sent, so a CRD the real server refuses
(a description on the root `metadata`) installed here, an unknown field survived here and vanished
there, and `kubectl get stp` showed an empty MODE column where a cluster shows the default. Each
function names the apiextensions source it follows; the CEL rules of `x-kubernetes-validations` are
evaluated with cel-python (the Go server uses cel-go; the grammar and the functions our rules use agree).

Regular expressions are Python's, anchored as written; Go's RE2 differs only in constructs (look-around,
back-references) that RE2 refuses and that the schemas here do not use.
"""

from __future__ import annotations

import collections
import copy
import functools
import hashlib
import json
import re
import threading
from typing import Any

Obj = dict[str, Any]
Schema = dict[str, Any]

_TYPES = {"object", "array", "string", "integer", "number", "boolean"}


# -- the CRD itself (apiextensions-apiserver/pkg/apis/apiextensions/validation/validation.go) ------


def validate_crd(crd: Obj) -> list[str]:
    """ValidateCustomResourceDefinition, the parts a generated CRD can get wrong."""
    errors: list[str] = []
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, plural = spec.get("group", ""), names.get("plural", "")
    if crd.get("metadata", {}).get("name") != f"{plural}.{group}":
        errors.append(f'metadata.name: Invalid value: must be spec.names.plural+"."+spec.group ({plural}.{group})')
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        errors.append('spec.scope: Unsupported value: supported values: "Cluster", "Namespaced"')
    storage = [v for v in spec.get("versions") or [] if v.get("storage")]
    if len(storage) != 1:
        errors.append("spec.versions: Invalid value: must have exactly one version marked as storage version")
    for index, version in enumerate(spec.get("versions") or []):
        where = f"spec.versions[{index}].schema.openAPIV3Schema"
        schema = ((version.get("schema") or {}).get("openAPIV3Schema")) or None
        if schema is None:
            errors.append(f"{where}: Required value: schemas are required")
            continue
        errors += structural_errors(schema, where=where)
        errors += _default_errors(schema, where=where)
    return errors


def structural_errors(schema: Schema, *, where: str = "") -> list[str]:
    """apiserver/schema/validation.go validateStructuralInvariants and validateStructuralMetadataInvariants,
    plus the completeness of `type` (every node but int-or-string and preserve-unknown-fields has one)."""
    return _structural(schema, where=where, level="root")


def _structural(node: Schema, *, where: str, level: str) -> list[str]:
    errors: list[str] = []
    for combinator in ("anyOf", "allOf", "oneOf", "not"):
        for nested in _as_list(node.get(combinator)):
            errors += _nested_errors(nested, where=f"{where}.{combinator}")
    kind = node.get("type")
    if (
        kind is None
        and not node.get("x-kubernetes-int-or-string")
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        place = {"root": "at the root", "item": "for specified array items", "field": "for specified object fields"}
        errors.append(f"{where}.type: Required value: must not be empty {place[level]}")
    elif kind is not None and kind not in _TYPES:
        errors.append(f"{where}.type: Unsupported value: {json.dumps(kind)}")
    if level == "root" and kind not in (None, "object"):
        errors.append(f"{where}.type: Invalid value: {json.dumps(kind)}: must be object at the root")
    if kind == "array" and not isinstance(node.get("items"), dict):
        errors.append(f"{where}.items: Required value: must be specified")
    if "properties" in node and "additionalProperties" in node:
        # apiextensions validation: "additionalProperties and properties are mutual exclusive".
        errors.append(
            f"{where}.additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"
        )
    if level == "root" and "additionalProperties" in node:
        errors.append(f"{where}.additionalProperties: Forbidden: must not be used at the root")
    if isinstance(node.get("items"), dict):
        errors += _structural(node["items"], where=f"{where}.items", level="item")
    if isinstance(node.get("additionalProperties"), dict):
        errors += _structural(node["additionalProperties"], where=f"{where}.additionalProperties", level="field")
    for name, prop in (node.get("properties") or {}).items():
        errors += _structural(prop, where=f"{where}.properties[{name}]", level="field")
    if level == "root":
        for meta_field in ("kind", "apiVersion"):
            prop = (node.get("properties") or {}).get(meta_field)
            if prop is not None and prop.get("type") != "string":
                errors.append(f"{where}.properties[{meta_field}].type: Invalid value: must be string")
        metadata = (node.get("properties") or {}).get("metadata")
        if metadata is not None:
            errors += _root_metadata_errors(metadata, where=f"{where}.properties[metadata]")
    for rule in node.get("x-kubernetes-validations") or []:
        try:
            _compile(rule["rule"])
        except Exception as e:
            errors.append(f"{where}.x-kubernetes-validations: Invalid value: {json.dumps(rule.get('rule'))}: {e}")
    return errors


def _root_metadata_errors(metadata: Schema, *, where: str) -> list[str]:
    """validateStructuralMetadataInvariants: only `type: object`, and at most `name`/`generateName` properties."""
    errors = []
    if metadata.get("type") != "object":
        errors.append(f"{where}.type: Invalid value: {json.dumps(metadata.get('type'))}: must be object")
    rest = {k: v for k, v in metadata.items() if k != "type"}
    properties = rest.pop("properties", None)
    if properties is not None and not (set(properties) <= {"name", "generateName"} and properties):
        rest["properties"] = properties
    if rest:
        errors.append(
            f"{where}: Forbidden: must not specify anything other than name and generateName, "
            "but metadata is implicitly specified"
        )
    return errors


def _nested_errors(node: Any, *, where: str) -> list[str]:
    """validateNestedValueValidation: inside anyOf/allOf/oneOf/not only value validations are allowed."""
    if not isinstance(node, dict):
        return []
    forbidden = {
        "type": "must be empty to be structural",
        "default": "must be undefined to be structural",
        "description": "must be empty to be structural",
        "title": "must be empty to be structural",
        "nullable": "must be false to be structural",
        "additionalProperties": "must be undefined to be structural",
        "x-kubernetes-validations": "must be empty to be structural",
        "x-kubernetes-preserve-unknown-fields": "must be false to be structural",
    }
    errors = [f"{where}.{key}: Forbidden: {why}" for key, why in forbidden.items() if node.get(key)]
    if "metadata" in (node.get("properties") or {}):
        errors.append(f"{where}.properties[metadata]: Forbidden: must not be specified in a nested context")
    return errors


def _default_errors(schema: Schema, *, where: str) -> list[str]:
    """apiextensions validation validateDefaults: a default must survive pruning and pass the schema."""
    errors: list[str] = []

    def visit(node: Schema, path: str) -> None:
        if "default" in node:
            value = copy.deepcopy(node["default"])
            pruned = prune(value, node)
            if pruned != node["default"]:
                errors.append(f"{path}.default: Invalid value: must not have unknown fields")
            for message in validate_value(pruned, node, path="<default>"):
                errors.append(f"{path}.default: Invalid value: {message}")
        for name, prop in (node.get("properties") or {}).items():
            visit(prop, f"{path}.properties[{name}]")
        if isinstance(node.get("items"), dict):
            visit(node["items"], f"{path}.items")
        if isinstance(node.get("additionalProperties"), dict):
            visit(node["additionalProperties"], f"{path}.additionalProperties")

    visit(schema, where)
    return errors


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


# -- custom resources: pruning (apiserver/schema/pruning/algorithm.go) ------------------------------


def prune(value: Any, schema: Schema, *, root: bool = False) -> Any:
    """Drop every field the schema does not specify, unless `x-kubernetes-preserve-unknown-fields`.

    At the root, apiVersion, kind and metadata are kept (metadata is ObjectMeta, pruned by its Go type).
    """
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        return value
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        result = {}
        for key, item in value.items():
            if root and key in ("apiVersion", "kind", "metadata"):
                result[key] = item
            elif properties is not None and key in properties:
                result[key] = prune(item, properties[key])
            elif isinstance(extra, dict):
                result[key] = prune(item, extra)
            elif extra is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                result[key] = item
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"]) for item in value]
    return value


# -- custom resources: defaulting (apiserver/schema/defaulting/algorithm.go) ------------------------


def default(value: Any, schema: Schema) -> Any:
    """Fill absent properties from `default`, recursively; a non-nullable `null` counts as absent.

    Nulls in fields that are not nullable and have no default are dropped afterwards, as
    PruneNonNullableNullsWithoutDefaults does, so they never reach validation.
    """
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name, prop in properties.items():
            if "default" in prop and (name not in value or (value[name] is None and not prop.get("nullable"))):
                value[name] = copy.deepcopy(prop["default"])
            elif name in value and value[name] is None and not prop.get("nullable"):
                del value[name]
        for name, item in list(value.items()):
            sub = properties.get(name)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is not None and item is not None:
                value[name] = default(item, sub)
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [default(item, schema["items"]) if item is not None else item for item in value]
    return value


# -- custom resources: validation (kube-openapi validate + apiserver/schema/cel) --------------------


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def validate_value(value: Any, schema: Schema, *, path: str) -> list[str]:
    """The OpenAPI value validations a CRD may use, with the server's message wording."""
    actual = _type_of(value)
    if value is None:
        if schema.get("nullable"):
            return []
        return [f'{path}: Invalid value: "null": {path} in body must be of type {schema.get("type", "object")}: "null"']
    if schema.get("x-kubernetes-int-or-string"):
        if actual not in ("integer", "string"):
            return [f"{path}: Invalid value: {json.dumps(value)}: must be an integer or a string"]
    elif (wanted := schema.get("type")) is not None:
        ok = actual == wanted or (wanted == "number" and actual == "integer")
        if not ok:
            return [f'{path}: Invalid value: "{actual}": {path} in body must be of type {wanted}: "{actual}"']
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(json.dumps(v) for v in schema["enum"])
        errors.append(f"{path}: Unsupported value: {json.dumps(value)}: supported values: {supported}")
    if isinstance(value, str):
        errors += _string_errors(value, schema, path)
    elif actual in ("integer", "number"):
        errors += _number_errors(value, schema, path)
    elif isinstance(value, list):
        errors += _array_errors(value, schema, path)
    elif isinstance(value, dict):
        errors += _object_errors(value, schema, path)
    if not errors:
        errors += _cel_errors(value, schema, path)
    return errors


def _string_errors(value: str, schema: Schema, path: str) -> list[str]:
    errors = []
    # kube-openapi counts characters (runes), not bytes, for minLength/maxLength.
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: Too long: may not be more than {schema['maxLength']} bytes")
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(
            f"{path}: Invalid value: {json.dumps(value)}: "
            f"{path} in body should be at least {schema['minLength']} chars long"
        )
    if "pattern" in schema and _regex(schema["pattern"]).search(value) is None:
        errors.append(f"{path}: Invalid value: {json.dumps(value)}: {path} in body should match '{schema['pattern']}'")
    return errors


def _number_errors(value: float, schema: Schema, path: str) -> list[str]:
    errors = []
    if "minimum" in schema:
        low = schema["minimum"]
        if value < low or (schema.get("exclusiveMinimum") and value == low):
            errors.append(f"{path}: Invalid value: {value}: {path} in body should be greater than or equal to {low}")
    if "maximum" in schema:
        high = schema["maximum"]
        if value > high or (schema.get("exclusiveMaximum") and value == high):
            errors.append(f"{path}: Invalid value: {value}: {path} in body should be less than or equal to {high}")
    if "multipleOf" in schema and value % schema["multipleOf"]:
        errors.append(f"{path}: Invalid value: {value}: {path} in body should be a multiple of {schema['multipleOf']}")
    return errors


def _array_errors(value: list[Any], schema: Schema, path: str) -> list[str]:
    errors = []
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items")
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(
            f"{path}: Invalid value: {len(value)}: {path} in body should have at least {schema['minItems']} items"
        )
    list_type = schema.get("x-kubernetes-list-type")
    if schema.get("uniqueItems") or list_type == "set":
        seen = [json.dumps(item, sort_keys=True) for item in value]
        if len(set(seen)) != len(seen):
            errors.append(f"{path}: Duplicate value: {path} in body shouldn't contain duplicates")
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: set[str] = set()
        for index, item in enumerate(value):
            key = json.dumps([(item or {}).get(k) for k in keys])
            if key in seen_keys:
                errors.append(f"{path}[{index}]: Duplicate value: {key}")
            seen_keys.add(key)
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            errors += validate_value(item, items, path=f"{path}[{index}]")
    return errors


def _object_errors(value: Obj, schema: Schema, path: str) -> list[str]:
    errors = []
    for name in schema.get("required") or []:
        if name not in value:
            errors.append(f"{path}.{name}: Required value")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(f"{path}: Too many: {len(value)}: must have at most {schema['maxProperties']} items")
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(
            f"{path}: Invalid value: {path} in body should have at least {schema['minProperties']} properties"
        )
    properties = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    for name, item in value.items():
        if name in properties:
            errors += validate_value(item, properties[name], path=f"{path}.{name}")
        elif isinstance(extra, dict):
            errors += validate_value(item, extra, path=f"{path}[{name}]")
    return errors


def _cel_errors(value: Any, schema: Schema, path: str) -> list[str]:
    """apiserver/schema/cel/validation.go: each rule sees the node as `self` and must yield true."""
    errors = []
    for rule in schema.get("x-kubernetes-validations") or []:
        if "oldSelf" in rule["rule"]:
            continue  # transition rules need the old object; the harness does not evaluate them
        verdict = _evaluate(rule["rule"], json.dumps(value, sort_keys=True))
        if isinstance(verdict, str):
            errors.append(f"{path}: Invalid value: {json.dumps(rule['rule'])}: evaluation error: {verdict}")
            continue
        if not verdict:
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            errors.append(f'{path}: Invalid value: "object": {message}')
    return errors


@functools.lru_cache(maxsize=8192)
def _evaluate(rule: str, value_json: str) -> bool | str:
    """A rule's verdict on a value (True/False), or the evaluation error's text.

    Cached by the value's JSON: cel-python interprets its parse tree (several ms a rule), and the
    same spec is re-validated on every status write of a custom resource.
    """
    try:
        verdict = _compile(rule).evaluate({"self": _to_cel(json.loads(value_json))})
    except Exception as e:  # cel-python raises its own error types for no-such-key and the like
        return str(e) or type(e).__name__
    return verdict is True or str(verdict) == "True"


@functools.lru_cache(maxsize=256)
def _compile(rule: str) -> Any:
    import celpy

    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def _to_cel(value: Any) -> Any:
    import celpy

    return celpy.json_to_cel(value)


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    # Python's `$` also matches before a final newline and its `\d`, `\s`, `\w` match any Unicode digit,
    # space or letter; RE2's do not (without flags), hence `\Z` and ASCII.
    return re.compile(re.sub(r"(?<!\\)\$", r"\\Z", pattern), re.ASCII)


# -- memoised validation of whole top-level properties --------------------------------------------

_VERDICTS: collections.OrderedDict[bytes, tuple[Schema, str, tuple[str, ...]]] = collections.OrderedDict()
_VERDICTS_MAX = 65_536
_VERDICTS_LOCK = threading.Lock()


def _validate_property(value: Any, schema: Schema, *, path: str) -> list[str]:
    """`validate_value` of a top-level property (`spec`, `status`), remembered by the value's exact JSON.

    Every write of a custom resource validates the whole object, as the real server does, but a status
    write leaves `spec` as it was: its structural checks and CEL rules (cel-python interprets them, several
    ms a rule) gave the same verdict for the same value before. `validate_value` is a pure function of the
    value and the schema, so its remembered answer *is* its answer; the key is the value's JSON in its own
    key order (1, 1.0 and true stay distinct, and error order follows the value's), and the schema must be
    the very same object, so a changed CRD never reuses a verdict. The 64 Ki most recent verdicts are kept,
    enough for a spec and a status per object of the 10,000-policy benchmark.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):  # not JSON (a YAML seed's datetime): validate without remembering
        return validate_value(value, schema, path=path)
    key = hashlib.blake2b(f"{id(schema)}\0{path}\0{text}".encode(), digest_size=20).digest()
    with _VERDICTS_LOCK:
        found = _VERDICTS.get(key)
        if found is not None and found[0] is schema and found[1] == path:
            _VERDICTS.move_to_end(key)
            return list(found[2])
    errors = validate_value(value, schema, path=path)
    with _VERDICTS_LOCK:
        _VERDICTS[key] = (schema, path, tuple(errors))
        if len(_VERDICTS) > _VERDICTS_MAX:
            _VERDICTS.popitem(last=False)
    return errors


# -- one call for the store ----------------------------------------------------------------------


def admit_custom_resource(obj: Obj, schema: Schema) -> tuple[Obj, list[str]]:
    """Prune, default, then validate a custom resource against its version's openAPIV3Schema."""
    pruned = prune(obj, schema, root=True)
    defaulted = default(pruned, schema)
    errors: list[str] = []
    properties = schema.get("properties") or {}
    for name in schema.get("required") or []:
        if name not in defaulted:
            errors.append(f"{name}: Required value")
    for name, item in defaulted.items():
        if name in ("apiVersion", "kind", "metadata"):
            continue
        if name in properties:
            errors += _validate_property(item, properties[name], path=name)
    if not errors:
        body = {k: v for k, v in defaulted.items()}
        errors += _cel_errors(body, schema, "<root>")
    return defaulted, errors
