"""The two template CustomResourceDefinitions, generated from the models like the policy's.

`StampedePolicyTemplate` (namespaced, for a team's own services) and `ClusterStampedePolicyTemplate`
(cluster-scoped, for the platform team's runbook) share one schema; only scope and names differ. They
have no status: a template is data, and each policy reports the template generation in force.
"""

from __future__ import annotations

import copy

from . import CATEGORY, GROUP, VERSION
from .crd import Schema, _schema_of
from .templates import (
    CLUSTER_TEMPLATE_KIND,
    CLUSTER_TEMPLATE_PLURAL,
    CLUSTER_TEMPLATE_SHORT_NAME,
    CLUSTER_TEMPLATE_SINGULAR,
    TEMPLATE_KIND,
    TEMPLATE_PLURAL,
    TEMPLATE_SHORT_NAME,
    TEMPLATE_SINGULAR,
    PolicyTemplateSpec,
)

_PRINTER_COLUMNS: list[Schema] = [
    {
        "name": "Parameters",
        "type": "string",
        "jsonPath": ".spec.parameters[*].name",
        "description": "Names of the parameters policies supply as spec.arguments.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def render_template_crd(*, cluster: bool) -> Schema:
    """The (Cluster)StampedePolicyTemplate CustomResourceDefinition as a plain dict."""
    kind, plural, singular, short = (
        (CLUSTER_TEMPLATE_KIND, CLUSTER_TEMPLATE_PLURAL, CLUSTER_TEMPLATE_SINGULAR, CLUSTER_TEMPLATE_SHORT_NAME)
        if cluster
        else (TEMPLATE_KIND, TEMPLATE_PLURAL, TEMPLATE_SINGULAR, TEMPLATE_SHORT_NAME)
    )
    where = "any namespace" if cluster else "its own namespace"
    schema: Schema = {
        "type": "object",
        "description": f"{kind} is a runbook shared by many StampedePolicies: policies in {where} name it in "
        "spec.templateRef and fill its parameters with spec.arguments.",
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this representation of an object.",
            },
            "kind": {
                "type": "string",
                "description": "Kind is a string value representing the REST resource this object represents.",
            },
            # Exactly `{type: object}`: the API server refuses anything else at the root `metadata`.
            "metadata": {"type": "object"},
            "spec": _schema_of(PolicyTemplateSpec, keep_defaults=True),
        },
        "required": ["spec"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": [short],
                "categories": [CATEGORY],
            },
            "scope": "Cluster" if cluster else "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "additionalPrinterColumns": copy.deepcopy(_PRINTER_COLUMNS),
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


__all__ = ["render_template_crd"]
