"""`stampede lint`: clean policies pass, each broken policy yields one precise line, the CLI exits 1.

The corpus in tests/lint-corpus/ holds one broken policy per rule; each file's first line says which
text its lint line must contain, so adding a case is adding a file.
"""

from __future__ import annotations

import re
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from stampede.cli import main
from stampede.linting import Problem, lint_files
from tests.support.ci import unavailable
from tests.support.fake_http import FakeHTTPServer, Response, vector_response

REPO = Path(__file__).resolve().parents[2]
# The example policies; examples/ also holds the demo's workloads, which lint refuses as "no StampedePolicy".
EXAMPLES = sorted(path for path in (REPO / "examples").glob("*.yaml") if "\nkind: StampedePolicy\n" in path.read_text())
CORPUS = sorted((REPO / "tests" / "lint-corpus").glob("*.yaml"))
# The contract's copy of the runbook policy; present beside the repository in this workspace and in CI.
SHARED_EXAMPLE = REPO / ".." / "shared" / "examples" / "aurum-cache-stampede.yaml"

POLICY = textwrap.dedent("""\
    apiVersion: stampede.aurum.io/v1alpha1
    kind: StampedePolicy
    metadata:
      name: {name}
      namespace: team-a
    spec:
      pollInterval: {poll}
      signals:
        - name: hitRate
          query: {query}
      severities:
        - level: P2
          any: ["hitRate < 0.5"]
      recovery:
        all: ["hitRate > 0.9"]
      phases:
        - name: first
          actions:
            - name: warm
              job: {{fromCronJob: cache-warming}}
    """)


def _policy(*, name: str = "good", poll: str = "15s", query: str = "vector(1)") -> str:
    return POLICY.format(name=name, poll=poll, query=query)


def _write(tmp_path: Path, text: str, name: str = "policy.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _expectation(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    match = re.fullmatch(r"# expect: (.+)", first)
    assert match, f"{path.name} must start with '# expect: <text of the lint line>'"
    return match[1]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_every_example_lints_clean(example: Path) -> None:
    assert lint_files([str(example)]) == []


def test_the_shared_contract_example_lints_clean_unchanged() -> None:
    if not SHARED_EXAMPLE.exists():
        unavailable("no ../shared beside this repository; the examples/ copy is checked instead")
    assert lint_files([str(SHARED_EXAMPLE)]) == []


def test_the_examples_cover_the_production_and_the_demo_policy() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"aurum-cache-stampede.yaml", "demo-fast.yaml"} <= names


def test_the_demo_workloads_are_not_mistaken_for_a_clean_policy_file() -> None:
    problems = lint_files([str(REPO / "examples" / "demo-cluster.yaml")])
    assert [problem.message for problem in problems] == ["no StampedePolicy in this file"]


def test_the_corpus_has_one_broken_policy_per_rule() -> None:
    assert {path.stem for path in CORPUS} >= {
        "bad-duration",
        "undeclared-signal",
        "bad-operator",
        "empty-phases",
        "two-actions-in-one",
        "negative-replicas",
        "unknown-mode",
        "after-decreasing",
        "duplicate-action-names",
        "poll-interval-too-short",
        "unknown-field",
    }


@pytest.mark.parametrize("broken", CORPUS, ids=lambda path: path.stem)
def test_each_broken_policy_fails_with_exactly_its_expected_line(broken: Path) -> None:
    problems = lint_files([str(broken)])
    assert len(problems) == 1, [str(problem) for problem in problems]
    line = str(problems[0])
    assert "\n" not in line
    assert line.startswith(f"{broken}: StampedePolicy lint-corpus/broken: ")
    assert _expectation(broken) in line


def test_a_bad_value_is_shown_after_the_message() -> None:
    problems = lint_files([str(REPO / "tests" / "lint-corpus" / "negative-replicas.yaml")])
    assert str(problems[0]).endswith(
        "spec.phases[0].actions[1].scale.replicas: Input should be greater than or equal to 1 (got -3)"
    )


def test_cross_field_errors_become_one_line_each_with_their_own_path(tmp_path: Path) -> None:
    text = _policy(poll="500ms").replace('any: ["hitRate < 0.5"]', 'any: ["hitRate < 0.5", "latency > 2"]')
    text = text.replace("    - name: hitRate\n", "    - name: hitRate\n      query: up\n    - name: hitRate\n")
    problems = lint_files([_write(tmp_path, text)])
    assert [(problem.path, problem.message) for problem in problems] == [
        ("spec.pollInterval", "must be at least 1s, got '500ms'"),
        ("spec.signals[1].name", "duplicate signal name 'hitRate'"),
        ("spec.severities[0].any[1]", "condition 'latency > 2' names undeclared signal 'latency'"),
    ]


def test_a_multi_document_bundle_lints_every_policy_and_ignores_other_kinds(tmp_path: Path) -> None:
    bundle = "\n---\n".join(
        [
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n",
            _policy(name="good"),
            "",  # an empty document, as kustomize and editors leave them
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec: {whatever: true}\n",
            _policy(name="bad", poll="5 m"),
        ]
    )
    problems = lint_files([_write(tmp_path, bundle)])
    assert len(problems) == 1
    assert problems[0].object == "StampedePolicy team-a/bad"
    assert problems[0].path == "spec.pollInterval"
    assert "invalid duration '5 m'" in problems[0].message


def test_a_kubectl_list_is_unpacked(tmp_path: Path) -> None:
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [yaml.safe_load(_policy(name="one")), yaml.safe_load(_policy(name="two", poll="0"))],
    }
    problems = lint_files([_write(tmp_path, yaml.safe_dump(listing))])
    assert [(problem.object, problem.path) for problem in problems] == [
        ("StampedePolicy team-a/two", "spec.pollInterval")
    ]


def test_a_yaml_syntax_error_is_one_problem_with_its_line_number(tmp_path: Path) -> None:
    text = _policy() + "---\nkind: StampedePolicy\nspec: [unclosed\n"
    problems = lint_files([_write(tmp_path, text)])
    assert len(problems) == 1
    assert problems[0].line is not None
    assert problems[0].line >= 23
    assert str(problems[0]).startswith(f"{tmp_path / 'policy.yaml'}:{problems[0].line}: YAML syntax error: ")


def test_duplicate_yaml_keys_are_refused_as_kubectl_would(tmp_path: Path) -> None:
    text = _policy().replace("  pollInterval: 15s\n", "  pollInterval: 15s\n  pollInterval: 30s\n")
    problems = lint_files([_write(tmp_path, text)])
    assert len(problems) == 1
    assert "duplicate key 'pollInterval'" in str(problems[0])
    assert problems[0].line == 8


def test_a_wrong_api_version_for_the_kind_is_a_problem(tmp_path: Path) -> None:
    text = _policy().replace("stampede.aurum.io/v1alpha1", "stampede.aurum.io/v1")
    problems = lint_files([_write(tmp_path, text)])
    assert [(problem.path, problem.message) for problem in problems] == [
        ("apiVersion", "expected 'stampede.aurum.io/v1alpha1' for kind StampedePolicy (got 'stampede.aurum.io/v1')")
    ]


def test_a_misspelt_kind_in_the_stampede_group_is_a_problem(tmp_path: Path) -> None:
    text = _policy().replace("kind: StampedePolicy", "kind: StampedePolicies")
    problems = lint_files([_write(tmp_path, text)])
    assert len(problems) == 1
    assert "unknown kind 'StampedePolicies'" in problems[0].message


def test_a_document_that_is_not_an_object_is_a_problem(tmp_path: Path) -> None:
    problems = lint_files([_write(tmp_path, "- just\n- a list\n")])
    assert len(problems) == 1
    assert "not a Kubernetes object" in problems[0].message


def test_a_missing_name_and_namespace_still_name_the_document(tmp_path: Path) -> None:
    text = _policy().replace("  name: good\n  namespace: team-a\n", "  labels: {}\n")
    problems = lint_files([_write(tmp_path, text)])
    assert [(problem.object, problem.path, problem.message) for problem in problems] == [
        ("StampedePolicy (document 1)", "metadata.name", "Field required")
    ]


def test_a_bad_configmap_key_is_quoted_in_the_path(tmp_path: Path) -> None:
    text = _policy().replace("job: {fromCronJob: cache-warming}", "configMap: {name: c, data: {'bad key': x}}")
    problems = lint_files([_write(tmp_path, text)])
    assert len(problems) == 1
    assert problems[0].path == 'spec.phases[0].actions[0].configMap.data["bad key"]'
    assert problems[0].message.startswith("invalid key: String should match pattern")
    assert problems[0].message.endswith("(got 'bad key')")


def test_an_unquoted_yaml_boolean_in_configmap_data_is_caught(tmp_path: Path) -> None:
    text = _policy().replace("job: {fromCronJob: cache-warming}", "configMap: {name: c, data: {ENABLED: true}}")
    problems = lint_files([_write(tmp_path, text)])
    assert [str(problem).split(": ", 2)[2] for problem in problems] == [
        "spec.phases[0].actions[0].configMap.data.ENABLED: Input should be a valid string (got True)"
    ]


def test_an_unreadable_file_is_one_problem(tmp_path: Path) -> None:
    problems = lint_files([str(tmp_path / "missing.yaml")])
    assert len(problems) == 1
    assert problems[0].message.startswith("cannot read the file")


def test_problems_print_as_file_object_path_message() -> None:
    problem = Problem(file="p.yaml", object="StampedePolicy ns/p", path="spec.mode", message="bad")
    assert str(problem) == "p.yaml: StampedePolicy ns/p: spec.mode: bad"
    assert (
        str(Problem(file="p.yaml", object="", path="", message="YAML syntax error: x", line=3))
        == "p.yaml:3: YAML syntax error: x"
    )


def test_the_cli_exits_1_with_one_line_per_problem() -> None:
    broken = [str(path) for path in CORPUS]
    result = CliRunner().invoke(main, ["lint", *broken, str(EXAMPLES[0])])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == len(broken)
    for path, line in zip(broken, lines, strict=True):
        assert line.startswith(f"{path}: ")


def test_the_cli_exits_0_for_clean_files() -> None:
    result = CliRunner().invoke(main, ["lint", *map(str, EXAMPLES)])
    assert result.exit_code == 0, result.output
    assert f"{len(EXAMPLES)} file(s) OK" in result.stdout


@pytest.fixture
def prometheus() -> Iterator[FakeHTTPServer]:
    """A stand-in Prometheus: `vector(1)` answers one sample, anything else is a PromQL parse error."""
    error = Response(status=400, body=b'{"status":"error","errorType":"bad_data","error":"parse error: unexpected"}')

    def respond(path: str) -> Response:
        return vector_response(1) if "vector%281%29" in path else error

    with FakeHTTPServer(respond) as server:
        yield server


def test_with_prometheus_every_query_is_test_run_and_failures_name_the_signal(
    tmp_path: Path, prometheus: FakeHTTPServer
) -> None:
    good = _write(tmp_path, _policy(name="good"), "good.yaml")
    bad = _write(tmp_path, _policy(name="bad", query="'sum(rate(x[5m]'"), "bad.yaml")
    problems = lint_files([good, bad], prometheus_url=prometheus.url)
    assert len(problems) == 1
    assert (problems[0].file, problems[0].path) == (bad, "spec.signals[0].query")
    assert problems[0].message.startswith("signal 'hitRate' would be unknown: ")
    assert "parse error" in problems[0].message


def test_with_prometheus_an_unreachable_server_is_reported_per_signal(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    problems = lint_files([_write(tmp_path, _policy())], prometheus_url=f"http://127.0.0.1:{port}")
    assert len(problems) == 1
    assert problems[0].path == "spec.signals[0].query"
    assert f"Prometheus at http://127.0.0.1:{port}" in problems[0].message


def test_without_prometheus_no_query_is_sent(tmp_path: Path, prometheus: FakeHTTPServer) -> None:
    # The policy itself names the fake server, so a lint that queried on its own would reach it.
    text = _policy().replace("spec:\n", f"spec:\n  prometheus: {{url: '{prometheus.url}'}}\n", 1)
    assert prometheus.url in text
    policy = _write(tmp_path, text)
    assert lint_files([policy]) == []
    assert prometheus.requests == []
    assert lint_files([policy], prometheus_url=prometheus.url) == []
    assert prometheus.requests, "the fake server counts the queries it is sent"


def test_schema_and_cross_field_problems_are_all_reported_in_one_run(tmp_path: Path) -> None:
    text = _policy(poll="5 m").replace('any: ["hitRate < 0.5"]', 'any: ["latency > 2"]')
    text = text.replace("job: {fromCronJob: cache-warming}", "scale: {kind: Deployment, name: api, replicas: -1}")
    problems = lint_files([_write(tmp_path, text)])
    assert [problem.path for problem in problems] == [
        "spec.pollInterval",
        "spec.phases[0].actions[0].scale.replicas",
        "spec.severities[0].any[0]",
    ]
    assert problems[2].message == "condition 'latency > 2' names undeclared signal 'latency'"


def test_cross_field_rules_rechecked_on_raw_yaml_never_repeat_a_schema_problem(tmp_path: Path) -> None:
    text = _policy(poll="500ms").replace('any: ["hitRate < 0.5"]', 'any: ["hitRate <<< 0.5"]')
    problems = lint_files([_write(tmp_path, text)])
    assert [problem.path for problem in problems] == ["spec.severities[0].any[0]", "spec.pollInterval"]


def test_a_misspelt_required_field_is_one_line_with_the_name_it_should_have(tmp_path: Path) -> None:
    text = _policy().replace("job: {fromCronJob: cache-warming}", "job: {fromCronjob: cache-warming}")
    problems = lint_files([_write(tmp_path, text)])
    assert [(problem.path, problem.message) for problem in problems] == [
        ("spec.phases[0].actions[0].job.fromCronjob", "unknown field, did you mean 'fromCronJob'?")
    ]


def test_a_misspelt_optional_field_gets_a_did_you_mean(tmp_path: Path) -> None:
    text = _policy().replace("    - name: first\n", "    - name: first\n      afterr: 5m\n")
    problems = lint_files([_write(tmp_path, text)])
    assert [(problem.path, problem.message) for problem in problems] == [
        ("spec.phases[0].afterr", "unknown field, did you mean 'after'?")
    ]


def test_an_unknown_field_like_nothing_known_is_just_unknown(tmp_path: Path) -> None:
    text = _policy().replace("  pollInterval: 15s\n", "  pollInterval: 15s\n  zzzqqq: 1\n")
    problems = lint_files([_write(tmp_path, text)])
    assert [(problem.path, problem.message) for problem in problems] == [("spec.zzzqqq", "unknown field")]


def test_an_unknown_metadata_field_the_server_would_drop_is_reported(tmp_path: Path) -> None:
    text = _policy().replace("  namespace: team-a\n", "  namespace: team-a\n  lables: {team: a}\n")
    problems = lint_files([_write(tmp_path, text)])
    assert [(problem.path, problem.message) for problem in problems] == [
        ("metadata.lables", "unknown field, did you mean 'labels'? (the API server would drop it)")
    ]


def test_a_file_without_any_policy_is_a_problem(tmp_path: Path) -> None:
    path = _write(tmp_path, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    assert [str(problem) for problem in lint_files([path])] == [f"{path}: no StampedePolicy in this file"]
    assert [problem.message for problem in lint_files([_write(tmp_path, "", "empty.yaml")])] == [
        "no StampedePolicy in this file"
    ]


def test_the_cli_fails_a_file_without_a_policy_instead_of_calling_it_ok(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["lint", _write(tmp_path, "apiVersion: v1\nkind: Namespace\n")])
    assert result.exit_code == 1
    assert "OK" not in result.output
