"""`stampede simulate` as a CI gate: times in Prometheus's units, and a replay that could not read its
signals fails with its own exit code and each distinct error printed once.

No Prometheus is needed here: the replay is fed a hand-made history, and the unreachable case points
at a port nothing listens on.
"""

from __future__ import annotations

import json
import socket
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from stampede.api.spec import PolicySpec
from stampede.cli import EXIT_STEPS_UNKNOWN, main
from stampede.simulate import SimulateError, parse_cli_duration, parse_time, replay
from tests.support.fake_http import FakeHTTPServer, Response

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

POLICY = textwrap.dedent("""\
    apiVersion: stampede.aurum.io/v1alpha1
    kind: StampedePolicy
    metadata: {name: gate, namespace: team-a}
    spec:
      pollInterval: 15s
      signals:
        - {name: hitRate, query: sum(a)}
        - {name: missRate, query: sum(b)}
        - {name: dbConnections, query: sum(c)}
      severities:
        - {level: P2, any: ["hitRate < 0.5"]}
      recovery: {all: ["hitRate > 0.9"]}
      phases:
        - name: first
          actions:
            - {name: breaker, configMap: {name: c, data: {K: "v"}}}
            - {name: scale, scale: {kind: Deployment, name: api, replicas: 3}}
      rollback: {stepDelay: 30s}
    """)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-7d", NOW - timedelta(days=7)),
        ("-2w", NOW - timedelta(weeks=2)),
        ("now-1d12h", NOW - timedelta(days=1, hours=12)),
        ("-90m", NOW - timedelta(minutes=90)),
        ("-500ms", NOW - timedelta(milliseconds=500)),
    ],
)
def test_relative_times_accept_prometheus_units(text: str, expected: datetime) -> None:
    assert parse_time(text, now=NOW) == expected


def test_a_bad_relative_time_names_the_units_it_accepts() -> None:
    with pytest.raises(SimulateError, match="7d or 2w"):
        parse_time("-7days", now=NOW)


def test_cli_durations_take_days_and_weeks_but_a_policy_does_not() -> None:
    assert parse_cli_duration("1w2d") == timedelta(days=9)
    spec_text = POLICY.replace("stepDelay: 30s", "stepDelay: 1d")
    with pytest.raises(ValueError, match="invalid duration '1d'"):
        PolicySpec.model_validate(__import__("yaml").safe_load(spec_text)["spec"])


def test_a_coarse_step_samples_less_often_but_keeps_the_step_delay() -> None:
    spec = PolicySpec.model_validate(__import__("yaml").safe_load(POLICY)["spec"])
    values = [0.2] * 3 + [0.95] * 5  # breach for three minutes, then recovered
    history = [
        (NOW + timedelta(minutes=i), {"hitRate": v, "missRate": 0.1, "dbConnections": 10.0}, {})
        for i, v in enumerate(values)
    ]
    result = replay(spec, history, step=60)
    undos = [event.time for event in result.events if event.reason == "ActionRolledBack"]
    assert len(undos) == 2
    assert undos[1] - undos[0] == timedelta(seconds=30)
    assert result.steps == len(history)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_prometheus_fails_the_replay_and_prints_its_error_once(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    url = f"http://127.0.0.1:{_free_port()}"
    args = ["simulate", "-f", str(path), "--prometheus", url, "--from", "-5m", "--step", "1m"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == EXIT_STEPS_UNKNOWN, result.output
    assert EXIT_STEPS_UNKNOWN not in (0, 1, 2)
    assert "every step had unknown signals" in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("  ")]
    assert len(error_lines) == len(set(error_lines)) >= 1
    # The table names each distinct reason once, not once per signal inside one cell.
    assert result.stdout.count(error_lines[0].strip()) <= 2, result.stdout


def test_an_invalid_policy_exits_1_not_the_unknown_steps_code(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("pollInterval: 15s", "pollInterval: 10ms"))
    result = CliRunner().invoke(main, ["simulate", "-f", str(path), "--prometheus", "http://x", "--from", "-1h"])
    assert result.exit_code == 1


HOSTILE_ERROR = "bad [/oops] [bold red]x[/] \x1b[31mred\x1b[0m \x1b]0;owned\x07 \x1b]8;;http://evil/\x07link\x9b2J end"


def _hostile_prometheus() -> FakeHTTPServer:
    """A Prometheus whose error text is rich markup and terminal control sequences."""
    body = json.dumps({"status": "error", "errorType": "bad_data", "error": HOSTILE_ERROR}).encode()
    return FakeHTTPServer(Response(status=400, body=body))


def _assert_inert(text: str) -> None:
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "\x9b" not in text
    assert "[/oops]" in text, text  # shown as written, not parsed as markup


def test_markup_and_escape_sequences_in_a_prometheus_error_neither_crash_simulate_nor_reach_the_terminal(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    with _hostile_prometheus() as server:
        args = ["simulate", "-f", str(path), "--prometheus", server.url, "--from", "-5m", "--step", "1m"]
        result = CliRunner().invoke(main, args)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == EXIT_STEPS_UNKNOWN, result.output
    _assert_inert(result.stdout)
    _assert_inert(result.stderr)


def test_lint_with_prometheus_prints_server_text_without_escape_sequences(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    with _hostile_prometheus() as server:
        result = CliRunner().invoke(main, ["lint", "--prometheus", server.url, str(path)])
    assert result.exit_code == 1, result.output
    _assert_inert(result.stderr)
    assert "would be unknown" in result.stderr
