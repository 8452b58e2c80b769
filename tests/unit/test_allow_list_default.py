"""The Prometheus allow-list is closed by default: unset, policies may query only STAMPEDE_PROMETHEUS_URL.

An empty list used to mean "any URL", so by default a policy could point the operator anywhere (SSRF).
"""

from __future__ import annotations

from stampede.handlers.config import OperatorConfig
from stampede.sources.prometheus import check_url_allowed

DEFAULT = "http://prometheus-operated.monitoring.svc:9090"


def _allowed(env: dict[str, str], url: str) -> bool:
    config = OperatorConfig.from_env(env)
    return not config.allowed_prometheus_urls or check_url_allowed(url, config.allowed_prometheus_urls) is None


def test_without_an_allow_list_only_the_default_prometheus_may_be_queried() -> None:
    env = {"STAMPEDE_PROMETHEUS_URL": DEFAULT}
    assert OperatorConfig.from_env(env).allowed_prometheus_urls == [DEFAULT]
    assert _allowed(env, DEFAULT)
    assert _allowed(env, f"{DEFAULT}/api/v1/query")
    assert not _allowed(env, "http://169.254.169.254/latest/meta-data")
    assert not _allowed(env, "http://prometheus-operated.monitoring.svc:9091")


def test_an_explicit_allow_list_widens_on_purpose_and_replaces_the_default() -> None:
    env = {"STAMPEDE_PROMETHEUS_URL": DEFAULT, "STAMPEDE_ALLOWED_PROMETHEUS_URLS": "http://thanos.monitoring.svc:10902"}
    assert _allowed(env, "http://thanos.monitoring.svc:10902")
    assert not _allowed(env, DEFAULT)


def test_a_star_opens_the_list_to_any_url() -> None:
    env = {"STAMPEDE_PROMETHEUS_URL": DEFAULT, "STAMPEDE_ALLOWED_PROMETHEUS_URLS": "*"}
    assert OperatorConfig.from_env(env).allowed_prometheus_urls == []
    assert _allowed(env, "http://anything.example:1234")


def test_with_neither_setting_nothing_is_configured_to_compare_against() -> None:
    assert OperatorConfig.from_env({}).allowed_prometheus_urls == []
