"""What a real kube-apiserver refuses in built-in objects, one function per rule, each naming its source.

The harness used to accept anything well-formed, so the operator was proven against a server more
lenient than any cluster: a ledger annotation over 256 KiB, an event message over 1024 bytes, a
Job with `blockOwnerDeletion` under OpenShift's admission plugin all passed here and failed there.
These rules are read from kubernetes/kubernetes (apimachinery validation, pkg/apis/*/validation,
the OwnerReferencesPermissionEnforcement plugin) and re-expressed over plain dicts; the store calls
`validate` before every committed write, so each rule lives here and only here.

Rules answer a list of field errors (`path: message`), as the real server joins them into one 422.
Custom resources are checked against their CRD's schema in `schemas.py`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

Obj = dict[str, Any]

# k8s.io/apimachinery/pkg/util/validation/validation.go: the shared name grammars.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_CONFIG_MAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
# apimachinery/pkg/api/validation/objectmeta.go: TotalAnnotationSizeLimitB.
ANNOTATIONS_MAX_BYTES = 256 * 1024
# pkg/apis/core/validation/validation.go: ValidateConfigMap uses core.MaxSecretSize for data + binaryData.
CONFIG_MAP_MAX_BYTES = 1024 * 1024
# etcd's default --max-request-bytes (1.5 MiB); the API server passes etcd's refusal on as a 500.
ETCD_MAX_OBJECT_BYTES = 1536 * 1024
# pkg/apis/core/validation/events.go: the limits of legacyValidateEvent for events with eventTime.
EVENT_MESSAGE_MAX_BYTES = 1024
EVENT_REASON_MAX = 128
EVENT_ACTION_MAX = 128
EVENT_REPORTING_INSTANCE_MAX = 128
# pkg/apis/batch/validation/validation.go: a Job's name becomes the value of its `job-name` label, and a
# CronJob's name gets an 11-character suffix for its Jobs (validateCronJobName allows 52).
JOB_NAME_MAX = 63
CRON_JOB_NAME_MAX = 52


class ObjectTooLarge(Exception):
    """etcd refused the write: the real server answers 500 with etcd's own words."""


# -- name grammars (k8s.io/apimachinery/pkg/util/validation/validation.go) -------------------------


def is_dns1123_label(value: str) -> list[str]:
    """IsDNS1123Label."""
    errors = []
    if len(value) > DNS1123_LABEL_MAX:
        errors.append(f"must be no more than {DNS1123_LABEL_MAX} characters")
    if not _DNS1123_LABEL.fullmatch(value):
        errors.append(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
            "and must start and end with an alphanumeric character"
        )
    return errors


def is_dns1123_subdomain(value: str) -> list[str]:
    """IsDNS1123Subdomain."""
    errors = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errors.append(f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        errors.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character"
        )
    return errors


def is_qualified_name(value: str) -> list[str]:
    """IsQualifiedName: an optional DNS-subdomain prefix and `/`, then a name part of at most 63 characters."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
        errors = []
    elif len(parts) == 2:
        prefix, name = parts
        errors = (
            ["prefix part must be non-empty"]
            if not prefix
            else [f"prefix part {e}" for e in is_dns1123_subdomain(prefix)]
        )
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
            "with an alphanumeric character, with an optional DNS subdomain prefix and '/'"
        ]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX:
        errors.append(f"name part must be no more than {QUALIFIED_NAME_MAX} characters")
    if name and not _QUALIFIED_NAME_PART.fullmatch(name):
        errors.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character"
        )
    return errors


def is_valid_label_value(value: str) -> list[str]:
    """IsValidLabelValue."""
    errors = []
    if len(value) > LABEL_VALUE_MAX:
        errors.append(f"must be no more than {LABEL_VALUE_MAX} characters")
    if not _LABEL_VALUE.fullmatch(value):
        errors.append(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character"
        )
    return errors


def is_config_map_key(value: str) -> list[str]:
    """IsConfigMapKey."""
    errors = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errors.append(f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters")
    if not _CONFIG_MAP_KEY.fullmatch(value):
        errors.append("a valid config key must consist of alphanumeric characters, '-', '_' or '.'")
    if value in (".", ".."):
        errors.append(f"must not be '{value}'")
    elif value.startswith(".."):
        errors.append("must not start with '..'")
    return errors


def _each(path: str, messages: Iterable[str], value: Any) -> list[str]:
    return [f"{path}: Invalid value: {json.dumps(value)}: {m}" for m in messages]


# -- object metadata (apimachinery/pkg/api/validation/objectmeta.go) ------------------------------


def validate_labels(labels: Any) -> list[str]:
    """v1validation.ValidateLabels: qualified-name keys, label values."""
    if not labels:
        return []
    if not isinstance(labels, dict):
        return ["metadata.labels: Invalid value: must be a map of strings"]
    errors: list[str] = []
    for key, value in labels.items():
        errors += _each("metadata.labels", is_qualified_name(key), key)
        if not isinstance(value, str):
            errors.append(f"metadata.labels: Invalid value: {json.dumps(value)}: must be a string")
        else:
            errors += _each("metadata.labels", is_valid_label_value(value), value)
    return errors


def validate_annotations(annotations: Any) -> list[str]:
    """ValidateAnnotations: keys are qualified names (case-insensitive), keys + values ≤ 256 KiB in total."""
    if not annotations:
        return []
    if not isinstance(annotations, dict):
        return ["metadata.annotations: Invalid value: must be a map of strings"]
    errors: list[str] = []
    total = 0
    for key, value in annotations.items():
        errors += _each("metadata.annotations", is_qualified_name(key.lower()), key)
        # Go's len() counts bytes of the UTF-8 encoding.
        total += len(key.encode("utf-8")) + len(str(value).encode("utf-8"))
    if total > ANNOTATIONS_MAX_BYTES:
        errors.append(f"metadata.annotations: Too long: may not be more than {ANNOTATIONS_MAX_BYTES} bytes")
    return errors


def validate_owner_references(refs: Any) -> list[str]:
    """ValidateOwnerReferences: apiVersion, kind, name, uid present; at most one controller."""
    if not refs:
        return []
    errors: list[str] = []
    controllers = 0
    for ref in refs if isinstance(refs, list) else []:
        for field in ("apiVersion", "kind", "name", "uid"):
            if not (ref or {}).get(field):
                errors.append(f"metadata.ownerReferences.{field}: Invalid value: must not be empty")
        controllers += bool((ref or {}).get("controller"))
    if controllers > 1:
        errors.append("metadata.ownerReferences: Invalid value: Only one reference can have Controller set to true")
    return errors


def validate_finalizers(finalizers: Any) -> list[str]:
    """ValidateFinalizers: every finalizer is a qualified name."""
    errors: list[str] = []
    for finalizer in finalizers or []:
        errors += _each("metadata.finalizers", is_qualified_name(str(finalizer)), finalizer)
    return errors


NameRule = Callable[[str], list[str]]


def validate_object_meta(meta: Obj, *, name_rule: NameRule | None) -> list[str]:
    """ValidateObjectMetaAccessor + validateObjectMetaAccessorWithOptsCommon, minus what the store owns."""
    errors: list[str] = []
    name = meta.get("name") or ""
    if name_rule is not None and name:
        errors += _each("metadata.name", name_rule(name), name)
    errors += validate_labels(meta.get("labels"))
    errors += validate_annotations(meta.get("annotations"))
    errors += validate_owner_references(meta.get("ownerReferences"))
    errors += validate_finalizers(meta.get("finalizers"))
    return errors


# -- the kinds the operator touches --------------------------------------------------------------


def validate_config_map(obj: Obj) -> list[str]:
    """pkg/apis/core/validation/validation.go ValidateConfigMap: keys, no key twice, ≤ 1 MiB of values."""
    errors: list[str] = []
    data = obj.get("data") or {}
    binary = obj.get("binaryData") or {}
    total = 0
    for key, value in data.items():
        errors += _each("data", is_config_map_key(key), key)
        total += len(str(value).encode("utf-8"))
    for key, value in binary.items():
        errors += _each("binaryData", is_config_map_key(key), key)
        if key in data:
            errors.append(f"data[{key}]: Invalid value: {json.dumps(key)}: duplicate of key present in binaryData")
        try:
            total += len(base64.b64decode(value, validate=True))
        except (ValueError, TypeError):
            errors.append(f"binaryData[{key}]: Invalid value: not base64")
    if total > CONFIG_MAP_MAX_BYTES:
        errors.append(f"[]: Too long: must have at most {CONFIG_MAP_MAX_BYTES} bytes")
    return errors


def validate_replicas(obj: Obj) -> list[str]:
    """pkg/apis/apps/validation ValidateDeploymentSpec / ValidateStatefulSetSpec: ValidateNonnegativeField."""
    replicas = (obj.get("spec") or {}).get("replicas")
    if replicas is None:
        return []
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        return [f"spec.replicas: Invalid value: {json.dumps(replicas)}: must be an integer"]
    if replicas < 0:
        return [f"spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"]
    return []


def validate_hpa(obj: Obj) -> list[str]:
    """pkg/apis/autoscaling/validation validateHorizontalPodAutoscalerSpec: 1 ≤ minReplicas ≤ maxReplicas."""
    spec = obj.get("spec") or {}
    errors: list[str] = []
    ref = spec.get("scaleTargetRef") or {}
    for field in ("kind", "name"):
        if not ref.get(field):
            errors.append(f"spec.scaleTargetRef.{field}: Required value")
    low, high = spec.get("minReplicas"), spec.get("maxReplicas")
    # minReplicasLowerBound is 1 unless the HPAScaleToZero feature gate is on (alpha, off by default).
    if low is not None and low < 1:
        errors.append(f"spec.minReplicas: Invalid value: {low}: must be greater than or equal to 1")
    if not isinstance(high, int) or high < 1:
        errors.append(f"spec.maxReplicas: Invalid value: {json.dumps(high)}: must be greater than 0")
    elif low is not None and high < low:
        errors.append(f"spec.maxReplicas: Invalid value: {high}: must be greater than or equal to `minReplicas`")
    return errors


def _job_name(limit: int) -> NameRule:
    def rule(name: str) -> list[str]:
        errors = is_dns1123_subdomain(name)
        if len(name) > limit:
            errors.append(f"must be no more than {limit} characters")
        return errors

    return rule


def validate_event(obj: Obj) -> list[str]:
    """pkg/apis/core/validation/events.go legacyValidateEvent, which every core/v1 event must pass."""
    errors: list[str] = []
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    involved_ns = (obj.get("involvedObject") or {}).get("namespace") or ""
    if not obj.get("eventTime"):
        if (involved_ns and namespace != involved_ns) or (not involved_ns and namespace not in ("", "default")):
            errors.append("involvedObject.namespace: Invalid value: does not match event.namespace")
        return errors
    if not involved_ns and namespace not in ("default", "kube-system"):
        errors.append("involvedObject.namespace: Invalid value: does not match event.namespace")
    # The wire name of core.Event.ReportingController is `reportingComponent`.
    controller = obj.get("reportingComponent") or ""
    if not controller:
        errors.append("reportingController: Required value")
    else:
        errors += _each("reportingController", is_qualified_name(controller), controller)
    instance = obj.get("reportingInstance") or ""
    if not instance:
        errors.append("reportingInstance: Required value")
    elif len(instance) > EVENT_REPORTING_INSTANCE_MAX:
        errors.append(f"reportingInstance: Invalid value: can have at most {EVENT_REPORTING_INSTANCE_MAX} characters")
    for field, limit in (("action", EVENT_ACTION_MAX), ("reason", EVENT_REASON_MAX)):
        value = obj.get(field) or ""
        if not value:
            errors.append(f"{field}: Required value")
        elif len(value.encode("utf-8")) > limit:
            errors.append(f"{field}: Invalid value: can have at most {limit} characters")
    if len((obj.get("message") or "").encode("utf-8")) > EVENT_MESSAGE_MAX_BYTES:
        errors.append(f"message: Invalid value: can have at most {EVENT_MESSAGE_MAX_BYTES} characters")
    return errors


@dataclasses.dataclass(frozen=True, kw_only=True)
class KindRules:
    name: NameRule | None
    body: Callable[[Obj], list[str]] | None = None


#: Per (group, plural): the name grammar its registry strategy uses, and its own spec rules.
KIND_RULES: dict[tuple[str, str], KindRules] = {
    # pkg/apis/core/validation ValidateNamespaceName = NameIsDNSLabel.
    ("", "namespaces"): KindRules(name=is_dns1123_label),
    ("", "configmaps"): KindRules(name=is_dns1123_subdomain, body=validate_config_map),
    ("", "secrets"): KindRules(name=is_dns1123_subdomain),
    ("", "serviceaccounts"): KindRules(name=is_dns1123_subdomain),
    ("", "pods"): KindRules(name=is_dns1123_subdomain),
    # Core events skip ObjectMeta name validation for old clients (ValidateEventCreate, v1 branch).
    ("", "events"): KindRules(name=None, body=validate_event),
    ("apps", "deployments"): KindRules(name=is_dns1123_subdomain, body=validate_replicas),
    ("apps", "statefulsets"): KindRules(name=is_dns1123_subdomain, body=validate_replicas),
    ("apps", "daemonsets"): KindRules(name=is_dns1123_subdomain),
    ("batch", "jobs"): KindRules(name=_job_name(JOB_NAME_MAX)),
    ("batch", "cronjobs"): KindRules(name=_job_name(CRON_JOB_NAME_MAX)),
    ("autoscaling", "horizontalpodautoscalers"): KindRules(name=is_dns1123_subdomain, body=validate_hpa),
    ("coordination.k8s.io", "leases"): KindRules(name=is_dns1123_subdomain),
    ("events.k8s.io", "events"): KindRules(name=is_dns1123_subdomain),
}


def validate(key: tuple[str, str], obj: Obj, *, custom: bool) -> list[str]:
    """Every built-in rule for one object about to be stored (custom resources: metadata only here)."""
    rules = KIND_RULES.get(key)
    # Custom resources: customResourceValidator uses NameIsDNSSubdomain.
    name_rule = rules.name if rules is not None else (is_dns1123_subdomain if custom else None)
    errors = validate_object_meta(obj.get("metadata") or {}, name_rule=name_rule)
    if rules is not None and rules.body is not None:
        errors += rules.body(obj)
    return errors


def check_size(obj: Obj) -> None:
    """etcd refuses a request over --max-request-bytes; the API server reports it as an internal error."""
    if len(json.dumps(obj, separators=(",", ":")).encode("utf-8")) > ETCD_MAX_OBJECT_BYTES:
        raise ObjectTooLarge("etcdserver: request is too large")


# -- admission: OwnerReferencesPermissionEnforcement ---------------------------------------------


def owner_references_permission_errors(new: Obj, old: Obj | None) -> list[str]:
    """plugin/pkg/admission/gc/gc_admission.go: setting blockOwnerDeletion needs `update` on the owner's
    `finalizers` subresource. The harness models a client without that right, so any newly set
    `blockOwnerDeletion: true` is refused (the check only looks at references that changed)."""
    old_refs = {
        json.dumps(ref, sort_keys=True) for ref in ((old or {}).get("metadata") or {}).get("ownerReferences") or []
    }
    errors = []
    for ref in (new.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("blockOwnerDeletion") and json.dumps(ref, sort_keys=True) not in old_refs:
            plural = ref.get("kind", "").lower() + "s"
            errors.append(
                f"cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set "
                f'finalizers on: User "harness" cannot update resource "{plural}/finalizers" for '
                f"{ref.get('kind')}/{ref.get('name')}"
            )
    return errors
