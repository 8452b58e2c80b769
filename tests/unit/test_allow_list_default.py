"""The Prometheus allow-list is closed by default: unset, policies may query only STAMPEDE_PROMETHEUS_URL.

An empty list used to mean "any URL", so by default a policy could point the operator anywhere (SSRF).
"""

from __future__ import annotations

import pytest

from stampede.settings import Settings, load_settings
from stampede.sources.prometheus import check_url_allowed

DEFAULT = "http://prometheus-operated.monitoring.svc:9090"


def _settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for name in ("STAMPEDE_PROMETHEUS_URL", "STAMPEDE_ALLOWED_PROMETHEUS_URLS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def _allowed(settings: Settings, url: str) -> bool:
    allowed = settings.allowed_prometheus_urls
    return not allowed or check_url_allowed(url, list(allowed)) is None


def test_without_an_allow_list_only_the_default_prometheus_may_be_queried(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, {"STAMPEDE_PROMETHEUS_URL": DEFAULT})
    assert settings.allowed_prometheus_urls == (DEFAULT,)
    assert _allowed(settings, DEFAULT)
    assert _allowed(settings, f"{DEFAULT}/api/v1/query")
    assert not _allowed(settings, "http://169.254.169.254/latest/meta-data")
    assert not _allowed(settings, "http://prometheus-operated.monitoring.svc:9091")


def test_an_explicit_allow_list_widens_on_purpose_and_replaces_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"STAMPEDE_PROMETHEUS_URL": DEFAULT, "STAMPEDE_ALLOWED_PROMETHEUS_URLS": "http://thanos.monitoring.svc:10902"}
    settings = _settings(monkeypatch, env)
    assert _allowed(settings, "http://thanos.monitoring.svc:10902")
    assert not _allowed(settings, DEFAULT)


def test_a_star_opens_the_list_to_any_url(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, {"STAMPEDE_PROMETHEUS_URL": DEFAULT, "STAMPEDE_ALLOWED_PROMETHEUS_URLS": "*"})
    assert settings.allowed_prometheus_urls == ()
    assert _allowed(settings, "http://anything.example:1234")


def test_with_neither_setting_nothing_is_configured_to_compare_against(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _settings(monkeypatch, {}).allowed_prometheus_urls == ()
