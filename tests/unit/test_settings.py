"""The operator's settings: read from STAMPEDE_* variables in one place, bounded, refused one line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from stampede.cli import main
from stampede.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No STAMPEDE_* variable of the shell or CI leaks into a case."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"STAMPEDE_{name.upper()}", raising=False)


def problems(monkeypatch: pytest.MonkeyPatch, **variables: str) -> list[str]:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    return raised.value.lines


def test_without_any_variable_the_documented_defaults_hold() -> None:
    settings = load_settings()
    assert settings.prometheus_url is None
    assert settings.allowed_prometheus_urls == ()
    assert settings.max_replicas == 50
    assert settings.status_refresh_seconds == 60.0
    assert settings.peering_priority is None
    assert settings.deletion_attempts == 10


def test_variables_are_read_with_the_stampede_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAMPEDE_PROMETHEUS_URL", "http://prometheus.monitoring:9090")
    monkeypatch.setenv("STAMPEDE_MAX_REPLICAS", "7")
    monkeypatch.setenv("STAMPEDE_STATUS_REFRESH_SECONDS", "2.5")
    monkeypatch.setenv("STAMPEDE_PEERING_PRIORITY", "100")
    monkeypatch.setenv("MAX_REPLICAS", "3")  # without the prefix: not ours
    settings = load_settings()
    assert (settings.prometheus_url, settings.max_replicas) == ("http://prometheus.monitoring:9090", 7)
    assert (settings.status_refresh_seconds, settings.peering_priority) == (2.5, 100)


def test_the_allow_list_is_read_from_the_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAMPEDE_ALLOWED_PROMETHEUS_URLS", " http://a:9090 , ,https://b/prom,")
    assert load_settings().allowed_prometheus_urls == ("http://a:9090", "https://b/prom")


def test_empty_variables_mean_unset_as_the_deployment_configmap_writes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAMPEDE_PROMETHEUS_URL", "")
    monkeypatch.setenv("STAMPEDE_ALLOWED_PROMETHEUS_URLS", "")
    settings = load_settings()
    assert (settings.prometheus_url, settings.allowed_prometheus_urls) == (None, ())


def test_a_float_that_is_no_number_names_the_variable_and_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    assert problems(monkeypatch, STAMPEDE_STATUS_REFRESH_SECONDS="soon") == [
        "STAMPEDE_STATUS_REFRESH_SECONDS: Input should be a valid number, unable to parse string as a number "
        "(got 'soon')"
    ]


def test_every_bad_variable_gets_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = problems(
        monkeypatch,
        STAMPEDE_MAX_REPLICAS="lots",
        STAMPEDE_STATUS_REFRESH_SECONDS="0",
        STAMPEDE_PEERING_PRIORITY="-1",
    )
    assert lines == [
        "STAMPEDE_MAX_REPLICAS: Input should be a valid integer, unable to parse string as an integer (got 'lots')",
        "STAMPEDE_STATUS_REFRESH_SECONDS: Input should be greater than or equal to 0.1 (got '0')",
        "STAMPEDE_PEERING_PRIORITY: Input should be greater than or equal to 0 (got '-1')",
    ]


@pytest.mark.parametrize(
    ("variable", "value", "bound"),
    [
        ("STAMPEDE_MAX_REPLICAS", "0", "greater than or equal to 1"),
        ("STAMPEDE_MAX_REPLICAS", "10001", "less than or equal to 10000"),
        ("STAMPEDE_STATUS_REFRESH_SECONDS", "3601", "less than or equal to 3600"),
        ("STAMPEDE_PEERING_PRIORITY", "2147483648", "less than or equal to 2147483647"),
    ],
)
def test_numbers_outside_their_bounds_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, bound: str
) -> None:
    assert problems(monkeypatch, **{variable: value}) == [f"{variable}: Input should be {bound} (got '{value}')"]


def test_a_prometheus_url_with_credentials_is_refused_without_repeating_them(monkeypatch: pytest.MonkeyPatch) -> None:
    (line,) = problems(monkeypatch, STAMPEDE_PROMETHEUS_URL="http://admin:hunter2@prometheus:9090")
    assert line.startswith("STAMPEDE_PROMETHEUS_URL: the URL 'http://***@prometheus:9090' must not contain user")
    assert "hunter2" not in line


def test_an_allow_list_prefix_that_is_no_plain_http_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    (line,) = problems(
        monkeypatch, STAMPEDE_ALLOWED_PROMETHEUS_URLS="http://ok:9090,ftp://files,http://u:secret@prom:9090"
    )
    assert line.startswith(
        "STAMPEDE_ALLOWED_PROMETHEUS_URLS: the prefix 'ftp://files' must use http or https; "
        "the prefix 'http://***@prom:9090' must not contain user information"
    )
    assert "secret" not in line


def test_stampede_run_with_a_bad_setting_prints_the_lines_and_exits_2_before_connecting() -> None:
    result = CliRunner().invoke(
        main,
        ["run", "-A", "--standalone", "--metrics-port", "0"],
        env={"STAMPEDE_MAX_REPLICAS": "fifty", "STAMPEDE_STATUS_REFRESH_SECONDS": "-1", "KUBECONFIG": "/nonexistent"},
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "STAMPEDE_MAX_REPLICAS: Input should be a valid integer, unable to parse string as an integer (got 'fifty')",
        "STAMPEDE_STATUS_REFRESH_SECONDS: Input should be greater than or equal to 0.1 (got '-1')",
    ]


def test_simulate_without_a_prometheus_reports_a_bad_default_url_setting_and_exits_2(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: stampede.aurum.io/v1alpha1\nkind: StampedePolicy\nmetadata: {name: p}\n"
        "spec:\n  signals: [{name: hitRate, query: up}]\n"
        "  severities: [{level: P1, any: ['hitRate < 0.5'], for: 1m}]\n"
        "  recovery: {all: ['hitRate > 0.9'], for: 1m}\n"
        "  phases: [{name: one, after: 0s, actions: [{name: a, configMap: {name: c, data: {k: v}}}]}]\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        main, ["simulate", "-f", str(policy), "--from", "-1h"], env={"STAMPEDE_PROMETHEUS_URL": "file:///etc/passwd"}
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("STAMPEDE_PROMETHEUS_URL: the URL 'file:///etc/passwd' must use http or https")


def test_pagerduty_events_go_to_pagerduty_unless_a_url_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().pagerduty_url == "https://events.pagerduty.com/v2/enqueue"
    monkeypatch.setenv("STAMPEDE_PAGERDUTY_URL", "https://events.eu.pagerduty.com/v2/enqueue")
    assert load_settings().pagerduty_url == "https://events.eu.pagerduty.com/v2/enqueue"
    monkeypatch.setenv("STAMPEDE_PAGERDUTY_URL", "")
    assert load_settings().pagerduty_url == "https://events.pagerduty.com/v2/enqueue"


def test_a_pagerduty_url_with_credentials_is_refused_without_showing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    (line,) = problems(monkeypatch, STAMPEDE_PAGERDUTY_URL="https://user:hunter2@proxy.example/v2/enqueue")
    assert line.startswith("STAMPEDE_PAGERDUTY_URL: ")
    assert "hunter2" not in line


def test_the_storm_breaker_is_off_by_default_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().max_concurrent_incidents == 0
    monkeypatch.setenv("STAMPEDE_MAX_CONCURRENT_INCIDENTS", "2")
    assert load_settings().max_concurrent_incidents == 2
    lines = problems(monkeypatch, STAMPEDE_MAX_CONCURRENT_INCIDENTS="-1")
    assert lines == ["STAMPEDE_MAX_CONCURRENT_INCIDENTS: Input should be greater than or equal to 0 (got '-1')"]


def test_webhook_urls_are_open_unless_listed_and_star_says_so_on_purpose(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().allowed_webhook_urls == ()
    monkeypatch.setenv("STAMPEDE_ALLOWED_WEBHOOK_URLS", "*")
    assert load_settings().allowed_webhook_urls == ()
    monkeypatch.setenv("STAMPEDE_ALLOWED_WEBHOOK_URLS", " https://hooks.slack.com/services , http://hooks.local:8080")
    assert load_settings().allowed_webhook_urls == ("https://hooks.slack.com/services", "http://hooks.local:8080")


def test_a_webhook_prefix_that_is_no_plain_http_url_is_refused_without_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = problems(monkeypatch, STAMPEDE_ALLOWED_WEBHOOK_URLS="https://hooks.ok,http://u:hunter2@evil.example")
    assert len(lines) == 1
    assert lines[0].startswith("STAMPEDE_ALLOWED_WEBHOOK_URLS: ")
    assert "must not contain user information" in lines[0]
    assert "hunter2" not in lines[0]


def test_target_opt_in_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().require_target_opt_in is False
    monkeypatch.setenv("STAMPEDE_REQUIRE_TARGET_OPT_IN", "true")
    assert load_settings().require_target_opt_in is True
