"""`stampede lint` renders templated policies from templates given in the same files, as the operator would."""

from __future__ import annotations

from pathlib import Path

import yaml

from stampede.linting import lint_files

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "many-services.yaml"


def _split(tmp_path: Path, text: str | None = None) -> tuple[Path, Path]:
    """The example as two files, the way the platform team and the services keep them."""
    documents = list(yaml.safe_load_all(text or EXAMPLE.read_text()))
    template, services = tmp_path / "runbook.yaml", tmp_path / "services.yaml"
    template.write_text(yaml.safe_dump(documents[0]))
    services.write_text(yaml.safe_dump_all(documents[1:]))
    return template, services


def _lines(*paths: Path) -> list[str]:
    return [str(problem) for problem in lint_files([str(path) for path in paths])]


def test_the_example_runbook_template_and_its_three_services_lint_clean_also_from_separate_files(
    tmp_path: Path,
) -> None:
    assert _lines(EXAMPLE) == []
    assert _lines(*_split(tmp_path)) == []


def test_a_policy_whose_template_is_not_in_the_files_says_so(tmp_path: Path) -> None:
    _, services = _split(tmp_path)
    lines = _lines(services)
    assert len(lines) == 3
    assert all(
        "spec.templateRef: ClusterStampedePolicyTemplate cache-stampede-runbook not found" in line for line in lines
    )


def test_a_misspelt_argument_is_named_along_with_the_missing_one(tmp_path: Path) -> None:
    template, services = _split(tmp_path, EXAMPLE.read_text().replace("service: search", "sevice: search"))
    lines = _lines(template, services)
    assert any("StampedePolicy shop/search: spec.arguments.sevice: unknown argument 'sevice'" in line for line in lines)
    assert any("spec.arguments.service: missing argument 'service'" in line for line in lines)


def test_a_rendered_policy_that_is_invalid_names_the_field_and_the_template(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace('maxReplicas: "12"', 'maxReplicas: "lots"'))
    lines = _lines(bad)
    assert len(lines) == 1, lines
    assert (
        "StampedePolicy shop/checkout (rendered from ClusterStampedePolicyTemplate cache-stampede-runbook)" in lines[0]
    )
    assert "spec.phases[0].actions[1].scale.replicas" in lines[0]


def test_a_template_referencing_an_undeclared_parameter_is_reported_on_the_template(tmp_path: Path) -> None:
    template, _ = _split(tmp_path, EXAMPLE.read_text().replace("name: $(database)", "name: $(databse)"))
    assert _lines(template) == [
        f"{template}: ClusterStampedePolicyTemplate cache-stampede-runbook: "
        "spec.policy.phases[0].actions[2].scale.name: $(databse) names no declared parameter"
    ]
