"""A crashed operator loses nothing: the incident continues under the same id, no duplicate Job, exact rollback."""

from __future__ import annotations

from typing import Any

from stampede.engine.digests import digest
from tests.e2e import policies
from tests.e2e.conftest import Case
from tests.e2e.stack import Stack

PHASE_THREE = {
    "name": "reinforce",
    "after": "6s",
    "actions": [{"name": "scale-worker", "scale": {"kind": "Deployment", "name": "aurum-worker", "replicas": 4}}],
}


def test_sigkill_mid_incident_continues_the_same_incident_without_a_duplicate_job(case: Case, stack: Stack) -> None:
    assert stack.operator is not None
    before = case.snapshot()
    case.create_ready("survivor", phases=[policies.phase_one(), policies.phase_two(), PHASE_THREE])
    mark = stack.harness.log.last_id
    case.set(hit_rate=0.2)
    opened = case.wait_status("survivor", "incident opened", lambda s: s.get("incident"))
    incident_id = opened["incident"]["id"]

    # Crash at the worst moment: right after the Job was created, before the status records it. Status
    # writes fail from now until the kill, so the Job can't be recorded first however the threads race.
    lost = stack.harness.faults.add(
        resources=["stampedepolicies"],
        subresources=["status"],
        namespace=case.ns,
        verbs=["patch", "update"],
        status=500,
    )
    try:
        stack.wait_for(
            "Job created",
            lambda: stack.harness.log.entries(since=mark, namespace=case.ns, verb="create", resource="jobs"),
            timeout=30,
            interval=0.01,
        )
        stack.operator.kill()
    finally:
        stack.harness.faults.remove(lost.id)
    (job,) = case.jobs("survivor")
    recorded = {c["action"] for c in case.status("survivor").get("applied") or []}
    assert "warm-cache" not in recorded, "the kill landed after the status recorded the Job: the crash tested nothing"
    assert case.status("survivor")["incident"]["id"] == incident_id
    stack.operator.start()

    status = case.wait_status(
        "survivor",
        "phase three applied after the restart",
        lambda s: s.get("phase") == "reinforce" and len(s.get("applied") or []) == 5,
        timeout=40,
    )
    assert status["incident"]["id"] == incident_id
    assert [j["metadata"]["name"] for j in case.jobs("survivor")] == [job["metadata"]["name"]]
    assert job["metadata"]["labels"]["stampede.aurum.io/incident"] == incident_id
    assert case.snapshot()["Deployment/aurum-worker"]["replicas"] == 4
    assert case.snapshot()[f"Deployment/{policies.API}"]["replicas"] == 6
    applied = {c["action"]: c for c in status["applied"]}
    assert applied["cache-lazy"]["original"] == {"CACHE_REFRESH_STRATEGY": digest("eager")}
    assert applied["scale-api"]["original"] == {"replicas": "3"}

    case.set(hit_rate=0.95)
    final = case.wait_status(
        "survivor", "incident closed", lambda s: s.get("state") == "Idle" and s.get("history"), timeout=40
    )
    assert [h["id"] for h in final["history"]] == [incident_id]
    assert len(case.events("survivor", "IncidentOpened")) == 1
    after = case.snapshot()
    assert after.pop("Jobs") == [job["metadata"]["name"]]  # Jobs are left to finish
    before.pop("Jobs")
    for key, value in before.items():
        if key.startswith("ConfigMap/"):
            assert after[key] == value, f"{key} not restored exactly"
        else:
            assert after[key]["replicas"] == value["replicas"], key
            assert after[key]["annotations"] == value["annotations"], key

    # The incident's record was continued after the restart, not started afresh: one record, whose timeline
    # begins with the opening seen by the operator that was killed.
    stack.wait_for(
        "the record closed",
        lambda: (record(case, f"survivor-{incident_id}").get("status") or {}).get("state") == "Closed",
        timeout=20,
    )
    records = stack.custom.list_namespaced_custom_object("stampede.aurum.io", "v1alpha1", case.ns, "stampedeincidents")
    assert [r["metadata"]["name"] for r in records["items"]] == [f"survivor-{incident_id}"]
    timeline = [e["reason"] for e in records["items"][0]["status"]["timeline"]]
    assert timeline[0] == "IncidentOpened"
    assert timeline.count("IncidentOpened") == 1
    assert timeline[-1] == "IncidentClosed"


def record(case: Case, name: str) -> dict[str, Any]:
    found: dict[str, Any] = case.stack.custom.get_namespaced_custom_object(
        "stampede.aurum.io", "v1alpha1", case.ns, "stampedeincidents", name
    )
    return found
