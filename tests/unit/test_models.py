"""Every validation rule of the StampedePolicy models, each failure naming the field and the bad value.

The models are the single source of truth for the CRD, `stampede lint` and the operator, so a rule
missing or a vague message here is missing or vague everywhere.
"""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from stampede.api import format_duration, parse_condition, parse_duration
from stampede.api.spec import Mode, OnMetricsError, PolicySpec, Severity, StampedePolicyDocument
from stampede.api.status import AppliedChange, IncidentStatus, PolicyStatus, State

Spec = dict[str, Any]


def _spec(**overrides: Any) -> Spec:
    spec: Spec = {
        "signals": [{"name": "hitRate", "query": "vector(1)"}, {"name": "dbConnections", "query": "vector(2)"}],
        "severities": [
            {"level": "P0", "any": ["dbConnections >= 190"], "for": "1m"},
            {"level": "P2", "any": ["hitRate < 0.8"], "for": "2m"},
        ],
        "recovery": {"all": ["hitRate > 0.9"], "for": "5m"},
        "phases": [
            {
                "name": "immediate",
                "after": "0s",
                "actions": [
                    {"name": "api-config", "configMap": {"name": "aurum-api-config", "data": {"A": "1"}}},
                    {"name": "scale-api", "scale": {"kind": "Deployment", "name": "aurum-api", "replicas": 10}},
                ],
            },
            {
                "name": "later",
                "after": "5m",
                "actions": [
                    {"name": "warm-cache", "job": {"fromCronJob": "cache-warming"}},
                ],
            },
        ],
    }
    spec.update(copy.deepcopy(overrides))
    return spec


def _errors(spec: Spec) -> list[tuple[tuple[int | str, ...], str, Any]]:
    with pytest.raises(ValidationError) as caught:
        PolicySpec.model_validate(spec)
    return [(tuple(error["loc"]), error["msg"], error["input"]) for error in caught.value.errors()]


def _only_error(spec: Spec) -> tuple[tuple[int | str, ...], str, Any]:
    errors = _errors(spec)
    assert len(errors) == 1, errors
    return errors[0]


# Durations ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("500ms", timedelta(milliseconds=500)),
        ("15s", timedelta(seconds=15)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(minutes=90)),
        ("2m30s500ms", timedelta(minutes=2, seconds=30, milliseconds=500)),
    ],
)
def test_go_durations_parse_to_the_expected_timedelta(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["5 m", "1d", "15", "-1s", "", "1h30", "m", "1.s", "PT15S", "1us"])
def test_a_malformed_duration_is_refused_naming_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(seconds=1, milliseconds=500), "1.5s"),
        (timedelta(hours=2, milliseconds=5), "2h5ms"),
    ],
)
def test_durations_format_in_the_shortest_go_form(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@given(st.integers(min_value=0, max_value=365 * 24 * 3600 * 1000).map(lambda ms: timedelta(milliseconds=ms)))
def test_formatting_then_parsing_a_duration_round_trips_at_millisecond_precision(value: timedelta) -> None:
    text = format_duration(value)
    assert abs(parse_duration(text) - value) < timedelta(microseconds=500)
    assert format_duration(parse_duration(text)) == text


def test_a_bad_duration_in_a_policy_names_the_field_and_the_text() -> None:
    loc, message, value = _only_error(_spec(pollInterval="5 m"))
    assert loc == ("pollInterval",)
    assert "invalid duration '5 m'" in message
    assert value == "5 m"


def test_durations_serialize_back_to_go_form_on_the_wire() -> None:
    wire = PolicySpec.model_validate(_spec(pollInterval="90s")).model_dump(mode="json", by_alias=True)
    assert wire["pollInterval"] == "1m30s"
    assert wire["escalation"] == {"after": "30m", "atSeverity": "P0", "levels": []}
    assert wire["targets"]["fullRecovery"] == "30m"
    assert wire["rollback"] == {"stepDelay": "30s", "waitForRollout": True, "rolloutTimeout": "10m"}


# Conditions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "op", "threshold"),
    [
        ("hitRate < 0.5", "<", 0.5),
        ("hitRate <= 0.5", "<=", 0.5),
        ("missRate > 0.8", ">", 0.8),
        ("dbConnections >= 190", ">=", 190.0),
        ("queueDepth == 0", "==", 0.0),
        ("queueDepth != 0", "!=", 0.0),
        ("x<-1.5e3", "<", -1500.0),
        ("  spike_ratio   >   .5  ", ">", 0.5),
    ],
)
def test_every_comparison_operator_parses(text: str, op: str, threshold: float) -> None:
    condition = parse_condition(text)
    assert (condition.op, condition.threshold) == (op, threshold)
    assert condition.text == text.strip()


@pytest.mark.parametrize(
    "text",
    [
        "hitRate => 0.5",
        "hitRate =< 0.5",
        "hitRate = 0.5",
        "hitRate <> 1",
        "hitRate < ",
        "< 0.5",
        "hitRate < abc",
        "1hit < 2",
        "hitRate < inf",
        "hitRate < 0.5 and x > 1",
        "",
    ],
)
def test_a_malformed_condition_is_refused_naming_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="invalid condition") as caught:
        parse_condition(text)
    assert repr(text) in str(caught.value)


def test_an_unknown_or_non_finite_reading_never_satisfies_a_condition() -> None:
    below = parse_condition("hitRate < 0.5")
    above = parse_condition("hitRate != 0.5")
    assert below.holds(0.1)
    assert not below.holds(0.9)
    for value in (None, math.nan, math.inf, -math.inf):
        assert not below.holds(value)
        assert not above.holds(value)


def test_a_malformed_condition_in_a_policy_names_the_field_and_the_text() -> None:
    spec = _spec(recovery={"all": ["hitRate > 0.9", "hitRate => 0.5"]})
    loc, message, value = _only_error(spec)
    assert loc == ("recovery", "all", 1)
    assert "invalid condition 'hitRate => 0.5'" in message
    assert value == "hitRate => 0.5"


def test_a_severity_condition_naming_an_undeclared_signal_is_refused_with_its_path() -> None:
    spec = _spec()
    spec["severities"][1]["any"].append("latency > 1")
    ((loc, message, _),) = _errors(spec)
    assert loc == ()
    assert "severities[1].any[1]: condition 'latency > 1' names undeclared signal 'latency'" in message


def test_a_recovery_condition_naming_an_undeclared_signal_is_refused_with_its_path() -> None:
    ((_, message, _),) = _errors(_spec(recovery={"all": ["cacheHits > 5"]}))
    assert "recovery.all[0]: condition 'cacheHits > 5' names undeclared signal 'cacheHits'" in message


def test_parsed_conditions_are_available_to_the_engine() -> None:
    spec = PolicySpec.model_validate(_spec())
    assert [condition.signal for condition in spec.severities[0].parsed()] == ["dbConnections"]
    assert spec.recovery.parsed()[0].threshold == 0.9


# Names and ordering ---------------------------------------------------------------------------------


def test_duplicate_signal_names_are_refused_at_the_repeat() -> None:
    spec = _spec()
    spec["signals"].append({"name": "hitRate", "query": "up"})
    ((_, message, _),) = _errors(spec)
    assert "signals[2].name: duplicate signal name 'hitRate'" in message


def test_duplicate_phase_names_are_refused_at_the_repeat() -> None:
    spec = _spec()
    spec["phases"][1]["name"] = "immediate"
    ((_, message, _),) = _errors(spec)
    assert "phases[1].name: duplicate phase name 'immediate'" in message


def test_action_names_must_be_unique_across_phases() -> None:
    spec = _spec()
    spec["phases"][1]["actions"][0]["name"] = "scale-api"
    ((_, message, _),) = _errors(spec)
    assert "phases[1].actions[0].name: duplicate action name 'scale-api'" in message


def test_a_severity_level_may_be_declared_only_once() -> None:
    spec = _spec()
    spec["severities"][1]["level"] = "P0"
    ((_, message, _),) = _errors(spec)
    assert "severities[1].level: duplicate severity level 'P0'" in message


def test_phase_after_must_not_decrease() -> None:
    spec = _spec()
    spec["phases"][0]["after"] = "10m"
    ((_, message, _),) = _errors(spec)
    assert "phases[1].after: '5m' is earlier than phases[0].after '10m'" in message


def test_phases_may_start_at_the_same_time() -> None:
    spec = _spec()
    spec["phases"][1]["after"] = "0s"
    assert PolicySpec.model_validate(spec).phases[1].after == timedelta(0)


def test_several_cross_field_problems_are_all_reported_at_once() -> None:
    spec = _spec(pollInterval="100ms", recovery={"all": ["nope > 1"]})
    spec["phases"][1]["name"] = "immediate"
    ((_, message, _),) = _errors(spec)
    assert message.count("; ") == 2
    assert "pollInterval: must be at least 1s, got '100ms'" in message


@pytest.mark.parametrize(
    ("where", "bad"),
    [
        ("phase", "Immediate"),
        ("phase", "a_b"),
        ("action", "-leading"),
        ("action", "x" * 64),
    ],
)
def test_phase_and_action_names_are_dns_labels(where: str, bad: str) -> None:
    spec = _spec()
    if where == "phase":
        spec["phases"][0]["name"] = bad
        expected_loc: tuple[int | str, ...] = ("phases", 0, "name")
    else:
        spec["phases"][0]["actions"][0]["name"] = bad
        expected_loc = ("phases", 0, "actions", 0, "name")
    loc, _, value = _only_error(spec)
    assert (loc, value) == (expected_loc, bad)


def test_a_signal_name_must_be_an_identifier_usable_in_conditions() -> None:
    spec = _spec()
    spec["signals"][0]["name"] = "hit-rate"
    loc, message, value = _errors(spec)[0]
    assert (loc, value) == (("signals", 0, "name"), "hit-rate")
    assert "should match pattern" in message


# Actions --------------------------------------------------------------------------------------------


def test_an_action_with_two_changes_is_refused_naming_both() -> None:
    spec = _spec()
    spec["phases"][0]["actions"][1]["configMap"] = {"name": "x", "data": {"A": "1"}}
    loc, message, _ = _only_error(spec)
    assert loc == ("phases", 0, "actions", 1)
    assert "action 'scale-api' must set exactly one of configMap, scale, job (got configMap, scale)" in message


def test_an_action_with_no_change_is_refused() -> None:
    spec = _spec()
    spec["phases"][1]["actions"][0] = {"name": "nothing"}
    loc, message, _ = _only_error(spec)
    assert loc == ("phases", 1, "actions", 0)
    assert "(got none)" in message


@pytest.mark.parametrize("replicas", [0, -3])
def test_replicas_must_be_at_least_one(replicas: int) -> None:
    spec = _spec()
    spec["phases"][0]["actions"][1]["scale"]["replicas"] = replicas
    loc, message, value = _only_error(spec)
    assert loc == ("phases", 0, "actions", 1, "scale", "replicas")
    assert message == "Input should be greater than or equal to 1"
    assert value == replicas


def test_a_daemonset_cannot_be_scaled() -> None:
    spec = _spec()
    spec["phases"][0]["actions"][1]["scale"]["kind"] = "DaemonSet"
    loc, message, value = _only_error(spec)
    assert loc == ("phases", 0, "actions", 1, "scale", "kind")
    assert "'Deployment' or 'StatefulSet'" in message
    assert value == "DaemonSet"


def test_configmap_data_needs_at_least_one_valid_key() -> None:
    spec = _spec()
    spec["phases"][0]["actions"][0]["configMap"]["data"] = {}
    loc, _, _ = _only_error(spec)
    assert loc == ("phases", 0, "actions", 0, "configMap", "data")
    spec["phases"][0]["actions"][0]["configMap"]["data"] = {"bad key": "1"}
    loc, _, value = _only_error(spec)
    assert loc == ("phases", 0, "actions", 0, "configMap", "data", "bad key", "[key]")
    assert value == "bad key"


def test_an_action_knows_its_target_kind_and_name() -> None:
    spec = PolicySpec.model_validate(_spec())
    assert [(action.kind, action.target) for _, action in spec.actions()] == [
        ("ConfigMap", "aurum-api-config"),
        ("Deployment", "aurum-api"),
        ("Job", "cache-warming"),
    ]
    assert spec.action("warm-cache") is not None
    assert spec.action("missing") is None


# Polling, enums, unknown fields, Prometheus ---------------------------------------------------------


def test_poll_interval_must_be_at_least_one_second() -> None:
    ((loc, message, _),) = _errors(_spec(pollInterval="999ms"))
    assert loc == ()
    assert "pollInterval: must be at least 1s, got '999ms'" in message
    assert PolicySpec.model_validate(_spec(pollInterval="1s")).poll_interval == timedelta(seconds=1)


@pytest.mark.parametrize(
    ("field", "value", "loc"),
    [
        ("mode", "Enforced", ("mode",)),
        ("onMetricsError", "Ignore", ("onMetricsError",)),
    ],
)
def test_an_unknown_enum_value_is_refused_listing_the_allowed_ones(field: str, value: str, loc: tuple[str]) -> None:
    got_loc, message, got = _only_error(_spec(**{field: value}))
    assert (got_loc, got) == (loc, value)
    assert message.startswith("Input should be ")


def test_an_unknown_severity_level_is_refused() -> None:
    spec = _spec()
    spec["severities"][0]["level"] = "P3"
    loc, message, value = _only_error(spec)
    assert (loc, value) == (("severities", 0, "level"), "P3")
    assert "'P0', 'P1' or 'P2'" in message


def test_a_misspelt_field_is_refused_not_ignored() -> None:
    loc, message, _ = _only_error(_spec(pollIntervall="15s"))
    assert (loc, message) == (("pollIntervall",), "Extra inputs are not permitted")


def test_the_defaults_are_the_documented_ones() -> None:
    spec = PolicySpec.model_validate(_spec())
    assert spec.mode is Mode.ENFORCE
    assert spec.suspend is False
    assert spec.poll_interval == timedelta(seconds=15)
    assert spec.on_metrics_error is OnMetricsError.HOLD
    assert spec.prometheus.url is None
    assert spec.prometheus.timeout is None
    assert spec.query_timeout == timedelta(seconds=10)
    assert spec.escalation.after == timedelta(minutes=30)
    assert spec.escalation.at_severity is Severity.P0
    assert spec.rollback.step_delay == timedelta(seconds=30)
    assert spec.phases[0].actions[0].min_severity is Severity.P2


def test_prometheus_accepts_one_kind_of_authentication_only() -> None:
    prometheus = {"bearerTokenSecretRef": {"name": "t", "key": "token"}, "basicAuthSecretRef": {"name": "b"}}
    loc, message, _ = _only_error(_spec(prometheus=prometheus))
    assert loc == ("prometheus",)
    assert "at most one of bearerTokenSecretRef and basicAuthSecretRef" in message


def test_a_zero_prometheus_timeout_is_refused() -> None:
    loc, message, _ = _only_error(_spec(prometheus={"timeout": "0s"}))
    assert loc == ("prometheus",)
    assert "timeout must be positive, got '0s'" in message


@pytest.mark.parametrize(
    ("credentials", "which"),
    [
        ({"bearerTokenSecretRef": {"name": "t", "key": "token"}}, "bearerTokenSecretRef"),
        ({"basicAuthSecretRef": {"name": "b"}}, "basicAuthSecretRef"),
    ],
)
def test_credentials_are_refused_for_an_http_url_or_with_insecure_skip_verify(
    credentials: dict[str, Any], which: str
) -> None:
    loc, message, _ = _only_error(_spec(prometheus={"url": "http://prom.example:9090", **credentials}))
    assert loc == ("prometheus",)
    assert f"{which}: credentials are sent over https only" in message
    assert "http://prom.example:9090" in message
    https = {"url": "https://prom.example", "insecureSkipVerify": True, **credentials}
    loc, message, _ = _only_error(_spec(prometheus=https))
    assert f"{which}: credentials are never sent with insecureSkipVerify: true" in message
    assert PolicySpec.model_validate(_spec(prometheus={"url": "https://prom.example", **credentials}))


def test_an_unset_prometheus_timeout_is_ten_seconds_or_the_poll_interval_when_shorter() -> None:
    assert PolicySpec.model_validate(_spec(pollInterval="3s")).query_timeout == timedelta(seconds=3)
    assert PolicySpec.model_validate(_spec(pollInterval="1m")).query_timeout == timedelta(seconds=10)


def test_a_prometheus_timeout_longer_than_a_minute_is_refused_naming_field_and_value() -> None:
    loc, message, _ = _only_error(_spec(pollInterval="2h", prometheus={"timeout": "1h"}))
    assert loc == ("prometheus",)
    assert "timeout: '1h' is longer than the maximum 1m" in message


def test_a_prometheus_timeout_longer_than_the_poll_interval_is_refused_naming_both() -> None:
    loc, message, _ = _only_error(_spec(pollInterval="5s", prometheus={"timeout": "30s"}))
    assert loc == ()
    assert "prometheus.timeout: '30s' is longer than pollInterval '5s'" in message


def test_a_prometheus_timeout_equal_to_the_poll_interval_is_accepted() -> None:
    spec = PolicySpec.model_validate(_spec(pollInterval="30s", prometheus={"timeout": "30s"}))
    assert spec.query_timeout == timedelta(seconds=30)


def _action(name: str, **extra: object) -> dict[str, object]:
    return {"name": name, "configMap": {"name": "cfg", "data": {"k": "v"}, **extra}}


def test_more_than_a_hundred_actions_in_all_phases_are_refused() -> None:
    phases = [{"name": f"p{i}", "actions": [_action(f"a{i}-{j}") for j in range(30)]} for i in range(4)]
    loc, message, _ = _only_error(_spec(phases=phases))
    assert loc == ()
    assert "phases: 120 actions in all phases, more than the maximum 100" in message


def test_a_restart_list_is_bounded() -> None:
    restart = [{"kind": "Deployment", "name": f"w{i}"} for i in range(11)]
    loc, _, _ = _only_error(_spec(phases=[{"name": "p", "actions": [_action("a", restart=restart)]}]))
    assert loc[-1] == "restart"


def test_configmap_data_is_bounded_in_keys_and_in_value_size() -> None:
    many = {f"k{i}": "v" for i in range(65)}
    action = {"name": "a", "configMap": {"name": "cfg", "data": many}}
    loc, _, _ = _only_error(_spec(phases=[{"name": "p", "actions": [action]}]))
    assert loc[-1] == "data"
    huge = {"name": "a", "configMap": {"name": "cfg", "data": {"k": "x" * (1024 * 1024 + 1)}}}
    loc, _, _ = _only_error(_spec(phases=[{"name": "p", "actions": [huge]}]))
    assert loc[-2:] == ("data", "k")


@pytest.mark.parametrize("url", ["ftp://prom:9090", "http://user:pw@prom:9090", "prom:9090", "http:// x"])
def test_a_prometheus_url_must_be_plain_http_or_https(url: str) -> None:
    loc, _, value = _only_error(_spec(prometheus={"url": url}))
    assert (loc, value) == (("prometheus", "url"), url)


def test_python_names_and_wire_names_both_populate_the_spec() -> None:
    by_wire = PolicySpec.model_validate(_spec(pollInterval="30s", onMetricsError="Continue"))
    by_name = PolicySpec.model_validate(_spec(poll_interval="30s", on_metrics_error="Continue"))
    assert by_wire == by_name


def test_a_whole_document_is_checked_with_its_metadata() -> None:
    document = {
        "apiVersion": "stampede.aurum.io/v1alpha1",
        "kind": "StampedePolicy",
        "metadata": {"name": "Bad_Name", "labels": {"a": "b"}},
        "spec": _spec(),
    }
    with pytest.raises(ValidationError) as caught:
        StampedePolicyDocument.model_validate(document)
    assert [tuple(error["loc"]) for error in caught.value.errors()] == [("metadata", "name")]


# Status ---------------------------------------------------------------------------------------------


def test_the_status_round_trips_through_its_wire_form() -> None:
    started = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
    status = PolicyStatus(
        state=State.INCIDENT,
        severity="P1",
        phase="immediate",
        incident=IncidentStatus(id="7", started_at=started, severity=Severity.P1),
        applied=[
            AppliedChange(
                action="api-config",
                kind="ConfigMap",
                name="aurum-api-config",
                applied_at=started,
                original={"A": None, "B": "x"},
                applied={"A": "1", "B": "y"},
            )
        ],
    )
    wire = status.wire()
    assert wire["incident"]["startedAt"] == "2024-05-01T12:00:00.250000Z"
    # No null inside an array: a real merge patch would drop it. The absent key is named instead.
    assert wire["applied"][0]["original"] == {"B": "x"}
    assert wire["applied"][0]["absent"] == ["A"]
    assert PolicyStatus.model_validate(wire) == status
    older = {**wire, "applied": [{**wire["applied"][0], "original": {"A": None, "B": "x"}}]}
    del older["applied"][0]["absent"]
    assert PolicyStatus.model_validate(older) == status, "a status written with nulls still reads"


@pytest.mark.parametrize(
    "started",
    [
        "2024-05-01T14:00:00+02:00",  # an offset
        "2024-05-01T12:00:00",  # naive text
        "2024-05-01T12:00:00Z",
        datetime(2024, 5, 1, 12, 0),  # a naive datetime, as Python code might pass one
        datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_a_naive_or_offset_timestamp_is_read_as_utc(started: str | datetime) -> None:
    incident = IncidentStatus.model_validate({"id": "1", "startedAt": started, "severity": "P0"})
    assert incident.started_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert incident.started_at.utcoffset() == timedelta(0)
    assert incident.model_dump(mode="json", by_alias=True)["startedAt"] == "2024-05-01T12:00:00Z"


@pytest.mark.parametrize("started", [1714564800, "yesterday", None])
def test_a_timestamp_that_is_not_rfc_3339_is_refused(started: object) -> None:
    with pytest.raises(ValidationError):
        IncidentStatus.model_validate({"id": "1", "startedAt": started, "severity": "P0"})


def test_a_duration_longer_than_a_year_is_rejected_naming_the_value() -> None:
    from stampede.api.durations import parse_duration

    assert parse_duration("8760h").days == 365
    with pytest.raises(ValueError, match="'9999999999999h' is longer than the maximum 8760h"):
        parse_duration("9999999999999h")


def test_models_with_the_same_fields_set_share_one_set_that_a_copy_never_changes() -> None:
    from stampede.api.status import StatusCondition

    now = datetime(2026, 1, 1, tzinfo=UTC)
    a = StatusCondition(type="Ready", status="True", reason="Valid", message="ok", last_transition_time=now)
    b = StatusCondition(type="Held", status="False", reason="NotHeld", message="no", last_transition_time=now)
    assert a.model_fields_set is b.model_fields_set
    copied = a.model_copy(update={"observed_generation": 3})
    assert "observed_generation" in copied.model_fields_set
    assert "observed_generation" not in a.model_fields_set and "observed_generation" not in b.model_fields_set
    assert set(b.model_dump(exclude_unset=True)) == {"type", "status", "reason", "message", "last_transition_time"}
    with pytest.raises(ValidationError):
        a.reason = "Changed"  # type: ignore[misc]
    assert a.model_fields_set == b.model_fields_set == set(b.model_dump(exclude_unset=True))
