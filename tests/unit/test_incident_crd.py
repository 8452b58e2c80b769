"""The StampedeIncident CRD, generated from the record models like the policy's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

from stampede.api.crd import render_crd, render_crd_yaml
from stampede.api.incident import IncidentRecordStatus, IncidentSpec
from stampede.simulate import replay

from .policies import at, tiny_spec

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "crds" / "stampedeincidents.stampede.aurum.io.yaml"
KIND = "StampedeIncident"


def _version() -> dict[str, Any]:
    (version,) = render_crd(KIND)["spec"]["versions"]
    return version  # type: ignore[no-any-return]


def test_the_committed_incident_crd_is_exactly_what_stampede_crd_prints() -> None:
    committed = COMMITTED.read_text(encoding="utf-8")
    assert committed == render_crd_yaml(render_crd(KIND)), "run `make crds` and commit the result"


def test_the_incident_crd_identifies_the_resource_as_the_contract_says() -> None:
    crd = render_crd(KIND)
    assert crd["metadata"]["name"] == "stampedeincidents.stampede.aurum.io"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"] == {
        "kind": "StampedeIncident",
        "listKind": "StampedeIncidentList",
        "plural": "stampedeincidents",
        "singular": "stampedeincident",
        "shortNames": ["stpi"],
        "categories": ["stampede"],
    }
    assert _version()["subresources"] == {"status": {}}
    assert kubernetes_validate.validate(crd, "1.31", strict=True) == "1.31"


def test_the_root_metadata_schema_is_exactly_an_object() -> None:
    assert _version()["schema"]["openAPIV3Schema"]["properties"]["metadata"] == {"type": "object"}


def test_printer_columns_show_policy_state_severity_phase_escalated_mttr_and_age() -> None:
    columns = {c["name"]: c["jsonPath"] for c in _version()["additionalPrinterColumns"]}
    assert columns == {
        "Policy": ".spec.policy",
        "State": ".status.state",
        "Severity": ".status.severity",
        "Phase": ".status.phase",
        "Escalated": ".status.escalationLevel",
        "MTTR": ".status.mttr",
        "Age": ".metadata.creationTimestamp",
    }


def test_the_status_lists_every_field_of_the_contract() -> None:
    status = _version()["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    contract = {
        "policy",
        "state",
        "severity",
        "startedAt",
        "firstBreachAt",
        "recoveredAt",
        "closedAt",
        "phases",
        "escalations",
        "changes",
        "timeline",
        "peaks",
        "kpis",
        "notifications",
        "dryRun",
    }
    assert contract <= set(status)
    assert set(status) - contract == {"phase", "escalationLevel", "mttr"}, "only the printer columns' helpers"
    assert status["state"]["enum"] == ["Open", "RollingBack", "Closed"]
    outcome = status["changes"]["items"]["properties"]["outcome"]
    assert outcome["enum"] == ["Applied", "RolledBack", "Skipped", "Failed", "Planned"]
    assert set(status["kpis"]["items"]["properties"]) == {"name", "seconds", "target", "met"}
    assert set(status["notifications"]["items"]["properties"]) == {"target", "event", "at", "ok"}


def test_a_record_the_engine_builds_validates_against_the_crd() -> None:
    result = replay(tiny_spec(), [(at(s), {"load": 20.0 if s < 600 else 1.0}, {}) for s in range(0, 900, 15)])
    (record,) = result.records.all.values()
    body = {
        "apiVersion": "stampede.aurum.io/v1alpha1",
        "kind": KIND,
        "metadata": {"name": "tiny-x"},
        "spec": IncidentSpec(policy="tiny", incident="x").model_dump(mode="json", by_alias=True),
        "status": record.wire(),
    }
    jsonschema.validate(body, _version()["schema"]["openAPIV3Schema"])
    assert IncidentRecordStatus.model_validate(body["status"]) == record
