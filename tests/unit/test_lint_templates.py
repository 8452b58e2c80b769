"""`stampede lint` renders templated policies from templates given in the same files, as the operator would."""

from __future__ import annotations

from pathlib import Path

from stampede.linting import lint_files

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "examples" / "runbook-template.yaml"
SERVICES = REPO / "examples" / "service-policies.yaml"


def _lines(*paths: Path) -> list[str]:
    return [str(problem) for problem in lint_files([str(path) for path in paths])]


def test_the_example_runbook_template_and_its_three_services_lint_clean() -> None:
    assert _lines(TEMPLATE, SERVICES) == []


def test_a_policy_whose_template_is_not_in_the_files_says_so() -> None:
    lines = _lines(SERVICES)
    assert len(lines) == 3
    assert all(
        "spec.templateRef: ClusterStampedePolicyTemplate cache-stampede-runbook not found" in line for line in lines
    )


def test_a_misspelt_argument_is_named_along_with_the_missing_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SERVICES.read_text().replace("service: search", "sevice: search"))
    lines = _lines(TEMPLATE, bad)
    assert any("StampedePolicy shop/search: spec.arguments.sevice: unknown argument 'sevice'" in line for line in lines)
    assert any("spec.arguments.service: missing argument 'service'" in line for line in lines)


def test_a_rendered_policy_that_is_invalid_names_the_field_and_the_template(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SERVICES.read_text().replace('maxReplicas: "12"', 'maxReplicas: "lots"'))
    lines = _lines(TEMPLATE, bad)
    assert len(lines) == 1, lines
    assert (
        "StampedePolicy shop/checkout (rendered from ClusterStampedePolicyTemplate cache-stampede-runbook)" in lines[0]
    )
    assert "spec.phases[0].actions[1].scale.replicas" in lines[0]


def test_a_template_referencing_an_undeclared_parameter_is_reported_on_the_template(tmp_path: Path) -> None:
    bad = tmp_path / "template.yaml"
    bad.write_text(TEMPLATE.read_text().replace("name: $(database)", "name: $(databse)"))
    lines = _lines(bad)
    assert lines == [
        f"{bad}: ClusterStampedePolicyTemplate cache-stampede-runbook: "
        "spec.policy.phases[0].actions[2].scale.name: $(databse) names no declared parameter"
    ]
