"""The `stampede` command: run the operator, print the CRD, lint and simulate policies.

Each subcommand is a thin shell over a module that does the work, so tests call the same code.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from .settings import Settings

EXIT_NO_CLUSTER = 2
"""`stampede run`: no in-cluster config and no usable kubeconfig; nothing to retry, so exit at once."""
EXIT_STEPS_UNKNOWN = 3
"""`stampede simulate`: the replay ran but some steps could not be evaluated (1 is "policy invalid",
2 is click's usage error), so a CI gate on a replay fails when Prometheus is unreachable."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stampede-operator")
def main() -> None:
    """stampede-operator: detect cache stampedes from Prometheus and run the mitigation runbook."""


@main.command()
@click.argument(
    "plural",
    default="stampedepolicies",
    type=click.Choice(
        [
            "stampedepolicies",
            "stampedeincidents",
            "stampedepolicytemplates",
            "clusterstampedepolicytemplates",
        ]
    ),
)
def crd(plural: str) -> None:
    """Print a CustomResourceDefinition generated from the models (default: StampedePolicy's)."""
    from .api.crd import render_crd, render_crd_yaml
    from .api.incident import INCIDENT_KIND
    from .api.template_crds import render_template_crd

    if plural == "stampedepolicies":
        click.echo(render_crd_yaml(render_crd()), nl=False)
    elif plural == "stampedeincidents":
        click.echo(render_crd_yaml(render_crd(INCIDENT_KIND)), nl=False)
    else:
        click.echo(render_crd_yaml(render_template_crd(cluster=plural.startswith("cluster"))), nl=False)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--prometheus", "prometheus_url", metavar="URL", help="Also test-run every query against this Prometheus."
)
def lint(files: tuple[str, ...], prometheus_url: str | None) -> None:
    """Validate StampedePolicy YAML files offline; one line per problem, exit 1 on any.

    Advice (`warning:` lines: restarts that may feed the stampede) never changes the exit code.
    """
    from .linting import lint_report
    from .sources.readings import printable

    problems, advice = lint_report(list(files), prometheus_url=prometheus_url)
    for problem in problems:
        # Server text (lint --prometheus) and file contents must not reach the terminal as escape sequences.
        click.echo(printable(str(problem)), err=True)
    for line in advice:
        click.echo(f"warning: {printable(str(line))}", err=True)
    if problems:
        sys.exit(1)
    click.echo(f"{len(files)} file(s) OK")


@main.command()
@click.option("-n", "--namespace", "namespaces", multiple=True, metavar="NS", help="Watch this namespace (repeatable).")
@click.option("-A", "--all-namespaces", "all_namespaces", is_flag=True, help="Watch every namespace.")
@click.option("--standalone", is_flag=True, help="No peering: run alone even if other instances exist.")
@click.option(
    "--peering",
    "peering_name",
    default="stampede-operator",
    show_default=True,
    help="Peering object name for HA (ignored with --standalone).",
)
@click.option(
    "--priority",
    type=int,
    default=None,
    help="Peering priority of this instance (default: STAMPEDE_PEERING_PRIORITY, else random, so replicas never tie).",
)
@click.option(
    "--peering-lifetime",
    "peering_lifetime",
    type=click.IntRange(min=5),
    default=None,
    help="Seconds a silent peer counts as alive: the bound on a failover after a crash "
    "(default: STAMPEDE_PEERING_LIFETIME, else 20; kopf's own default: 60).",
)
@click.option(
    "--selector",
    "-l",
    "selector",
    metavar="SELECTOR",
    default=None,
    help="Serve only policies whose labels match, e.g. shard=a or tier!=batch,canary (kubectl's equality "
    "selectors; comma means and). Give each share its own --peering name. See docs/scaling.md.",
)
@click.option("--metrics-port", default=9102, show_default=True, help="Port of /metrics and /readyz (0 disables both).")
@click.option(
    "--liveness",
    "liveness",
    metavar="URL",
    default=None,
    help="kopf health endpoint, e.g. http://0.0.0.0:8080/healthz.",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def run(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    standalone: bool,
    peering_name: str,
    priority: int | None,
    peering_lifetime: int | None,
    selector: str | None,
    metrics_port: int,
    liveness: str | None,
    verbose: bool,
) -> None:
    """Run the operator (kopf underneath; in-cluster config or KUBECONFIG)."""
    import logging
    import os
    import random
    import secrets
    import socket

    import kopf

    from .handlers import metrics, peering, selection, templates
    from .handlers import operator as _handlers  # importing registers the handlers

    if bool(namespaces) == all_namespaces:
        raise click.UsageError("give either -n NAMESPACE (repeatable) or -A, not both and not neither")
    if selector is not None:
        try:
            selection.select(selection.parse_selector(selector))
        except selection.SelectorError as error:
            raise click.BadParameter(str(error), param_hint="--selector") from None
    settings = _settings_or_exit()  # fail fast on a bad environment, before connecting anywhere
    problem = _handlers.credentials_problem()
    if problem is not None:
        click.echo(f"stampede run: {problem}", err=True)
        sys.exit(EXIT_NO_CLUSTER)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not verbose:  # kopf reports every successful handler call at INFO; only problems matter here
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if all_namespaces:  # cluster-scoped templates need a cluster-wide watch, which -n NS does not grant
        templates.serve_cluster_templates()
    if settings.max_concurrent_incidents:  # the index costs a quadratic startup; only the storm breaker reads it
        _handlers.serve_storm_index()
    if metrics_port:
        metrics.serve(metrics_port)
    if priority is None:
        priority = settings.peering_priority
    if priority is None:
        # kopf pauses every instance that ties for the highest priority; a random draw per
        # process (one in a billion to tie) lets two replicas elect one active instance.
        priority = random.SystemRandom().randint(1, 1_000_000_000)
    # Chosen here rather than by kopf so that the peering watch recognises its own heartbeat.
    identity = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"
    peering.configure(
        None
        if standalone
        else peering.PeeringSetup(
            name=peering_name,
            identity=identity,
            priority=priority,
            lifetime=peering_lifetime or settings.peering_lifetime,
            clusterwide=all_namespaces,
            namespaces=namespaces,
        )
    )
    kopf.run(
        standalone=standalone,
        namespaces=list(namespaces),
        clusterwide=all_namespaces,
        peering_name=None if standalone else peering_name,
        priority=priority,
        identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        liveness_endpoint=liveness,
        memo=kopf.Memo(settings=settings),  # the startup handler takes the settings checked here
    )


def _settings_or_exit() -> Settings:
    """The operator's settings, or exit 2 with one line per bad `STAMPEDE_*` variable (as `lint` prints)."""
    from .settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as error:
        for line in error.lines:
            click.echo(line, err=True)
        sys.exit(2)


@main.command()
@click.option(
    "-f",
    "--filename",
    "policy_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="YAML file holding the StampedePolicy (the first one in the file is replayed).",
)
@click.option(
    "--prometheus",
    "prometheus_url",
    metavar="URL",
    help="Prometheus to read history from (default: spec.prometheus.url, then STAMPEDE_PROMETHEUS_URL).",
)
@click.option(
    "--from", "start_text", required=True, metavar="T", help="Start: RFC 3339, now, or relative (-1h, -7d, -2w)."
)
@click.option(
    "--to", "end_text", default="now", show_default=True, metavar="T", help="End: RFC 3339, now, or relative (-10m)."
)
@click.option(
    "--step",
    "step_text",
    metavar="D",
    help="Sampling step, e.g. 15s or 1m (default: the policy's pollInterval); the policy's own durations "
    "(phases, stepDelay, for windows) are kept exactly.",
)
@click.option("--output", "-o", "output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--report-dir",
    "report_dir",
    type=click.Path(file_okay=False),
    help="Also write a postmortem draft (<policy>-<id>.md) and a plot (.png) per incident into this directory.",
)
@click.option(
    "--false-opening-threshold",
    "false_text",
    default="5m",
    show_default=True,
    metavar="D",
    help="Incidents closed sooner than this count as false openings.",
)
def simulate(
    policy_file: str,
    prometheus_url: str | None,
    start_text: str,
    end_text: str,
    step_text: str | None,
    output: str,
    false_text: str,
    report_dir: str | None,
) -> None:
    """Replay Prometheus history through the engine and print the incident timeline it would have produced.

    Exit codes: 0 every step was evaluated; 1 the policy or an argument is invalid (nothing replayed);
    3 the replay ran but some steps had unknown signals (Prometheus unreachable, a query failing), so
    its timeline cannot be trusted: each distinct error is printed once on stderr.
    """
    import json
    import shutil
    from datetime import UTC, datetime

    from .simulate import (
        SimulateError,
        load_policy,
        parse_cli_duration,
        parse_time,
        read_history,
        render_table,
        replay,
    )
    from .sources.readings import printable

    try:
        name, spec = load_policy(policy_file)
        now = datetime.now(UTC).replace(microsecond=0)
        start, end = parse_time(start_text, now=now), parse_time(end_text, now=now)
        if end <= start:
            raise SimulateError(f"--to ({end_text}) must be after --from ({start_text})")
        try:
            step = parse_cli_duration(step_text).total_seconds() if step_text else spec.poll_interval.total_seconds()
            threshold = parse_cli_duration(false_text)
        except ValueError as exc:
            raise SimulateError(str(exc)) from None
        if step <= 0:
            raise SimulateError("--step must be positive")
        url = prometheus_url or spec.prometheus.url or _settings_or_exit().prometheus_url
        if not url:
            raise SimulateError("no Prometheus: give --prometheus URL (the policy sets no spec.prometheus.url)")
    except SimulateError as problem:
        click.echo(str(problem), err=True)
        sys.exit(1)
    history = read_history(spec, url=url, start=start, end=end, step=step)
    result = replay(spec, history, policy=name, start=start, end=end, step=step, false_opening_threshold=threshold)
    if output == "json":
        click.echo(json.dumps(result.wire(), indent=2))
    else:
        width = shutil.get_terminal_size((160, 24)).columns if sys.stdout.isatty() else 160
        click.echo(render_table(result, width=width), nl=False)
    if report_dir:
        _replay_reports(name, spec, result, history, report_dir)
    if result.unknown_steps:
        which = (
            "every step" if result.unknown_steps == result.steps else f"{result.unknown_steps} of {result.steps} steps"
        )
        click.echo(f"error: {which} had unknown signals, so the replay cannot be trusted:", err=True)
        for error in result.errors:
            click.echo(f"  {printable(error)}", err=True)
        sys.exit(EXIT_STEPS_UNKNOWN)


def _replay_reports(name: str, spec: Any, result: Any, history: Any, directory: str) -> None:
    """`simulate --report-dir`: one report per incident of the replay, from the replayed history."""
    from pathlib import Path

    from .reporting import Report, write_report
    from .reporting.plot import PlotUnavailable

    namespace, _, policy = name.rpartition("/")
    series = {s.name: [(when, values.get(s.name)) for when, values, _ in history] for s in spec.signals}
    for incident in result.incidents:
        if incident.record is None:
            continue
        report = Report(
            namespace=namespace,
            policy=policy,
            incident=incident.id,
            spec=spec,
            record=incident.record,
            series=series,
            source="replay",
        )
        try:
            paths = write_report(report, Path(directory), now=result.end)
        except PlotUnavailable as problem:
            click.echo(f"report: {Path(directory) / report.basename}.md (no plot: {problem})", err=True)
            sys.exit(1)
        click.echo(f"report: {paths[0]} {paths[1]}", err=True)


@main.command()
@click.option("-n", "--namespace", default="default", show_default=True, help="Namespace of the policy.")
@click.argument("policy")
@click.option("--incident", "incident", metavar="ID", help="Incident id (default: the latest record of the policy).")
@click.option(
    "--prometheus",
    "prometheus_url",
    metavar="URL",
    help="Prometheus to read the signals' history from (default: the policy's spec.prometheus.url).",
)
@click.option(
    "--output-dir",
    "output_dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where <policy>-<id>.md and <policy>-<id>.png are written.",
)
@click.option("--context", default=None, help="The kubeconfig context to use (as kubectl's --context).")
@click.option("--kubeconfig", default=None, type=click.Path(dir_okay=False), help="Path to the kubeconfig.")
def report(
    namespace: str,
    policy: str,
    incident: str | None,
    prometheus_url: str | None,
    output_dir: str,
    context: str | None,
    kubeconfig: str | None,
) -> None:
    """Write a postmortem draft and a plot of an incident from its StampedeIncident record and Prometheus.

    `kubectl stampede report` runs this command.
    """
    from datetime import UTC, datetime
    from pathlib import Path

    from .reporting import write_report
    from .reporting.cluster import ReportError, fetch_report
    from .reporting.plot import PlotUnavailable

    now = datetime.now(UTC)
    try:
        found = fetch_report(
            namespace=namespace,
            policy=policy,
            incident=incident,
            prometheus_url=prometheus_url,
            now=now,
            kubeconfig=kubeconfig,
            context=context,
        )
    except ReportError as problem:
        click.echo(str(problem), err=True)
        sys.exit(1)
    try:
        markdown, png = write_report(found, Path(output_dir), now=now)
    except PlotUnavailable as problem:
        click.echo(str(Path(output_dir) / f"{found.basename}.md"))  # the draft is written without the plot
        click.echo(str(problem), err=True)
        sys.exit(1)
    if found.note:
        click.echo(f"note: {found.note}", err=True)
    click.echo(str(markdown))
    click.echo(str(png))


if __name__ == "__main__":
    main()
