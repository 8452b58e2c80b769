"""The two template CustomResourceDefinitions, generated from the models like the policy's.

`StampedePolicyTemplate` (namespaced, for a team's own services) and `ClusterStampedePolicyTemplate`
(cluster-scoped, for the platform team's runbook) share one schema; only scope and names differ. They
have no status: a template is data, and each policy reports the template generation in force.
"""

from __future__ import annotations

from .crd import Schema, _schema_of, crd_envelope, object_schema
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
    schema = object_schema(
        description=f"{kind} is a runbook shared by many StampedePolicies: policies in {where} name it in "
        "spec.templateRef and fill its parameters with spec.arguments.",
        spec=_schema_of(PolicyTemplateSpec, keep_defaults=True),
        spec_required=True,
    )
    return crd_envelope(
        kind=kind,
        plural=plural,
        singular=singular,
        short_name=short,
        columns=_PRINTER_COLUMNS,
        schema=schema,
        cluster=cluster,
    )


__all__ = ["render_template_crd"]
