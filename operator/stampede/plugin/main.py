"""`kubectl-stampede`: get, incidents, describe, and the manual controls, with kubectl's habits.

Habits kept: `-n/--namespace` (default: the context's namespace), `-A/--all-namespaces`, `--context`,
`--kubeconfig` (else `KUBECONFIG`, else ~/.kube/config), `-o json|yaml|wide` on the listing commands,
`Error from server (NotFound): ...` on stderr with exit code 1, plain text without colour when stdout is
not a terminal (rich decides; `NO_COLOR` is honoured). The options are accepted after the subcommand,
where kubectl users put them.

`report` runs `stampede report` (the same installation's, in its own process): the report reads Prometheus
as well as the API server, and this process stays a client of the API server only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import yaml
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from .kube import GROUP, Cluster, PluginError
from .views import Story, Table, history_table, policies_table, records_table, story

HOLD = "stampede.aurum.io/hold"
ROLLBACK_NOW = "stampede.aurum.io/rollback-now"
F = TypeVar("F", bound=Callable[..., Any])


def _console(*, err: bool = False) -> Console:
    # Not a terminal: rich writes no colour and no control codes, and wraps at COLUMNS (80 if unset), as
    # `kubectl` output piped to grep or a file must look.
    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200
    return Console(stderr=err, width=width, highlight=False, soft_wrap=False)


def _connection(func: F) -> F:
    """kubectl's connection and scope options, on every subcommand."""
    options = [
        click.option("-n", "--namespace", default=None, help="Namespace (default: the context's namespace)."),
        click.option("--context", default=None, help="The kubeconfig context to use."),
        click.option("--kubeconfig", default=None, type=click.Path(dir_okay=False), help="Path to the kubeconfig."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _all_namespaces(func: F) -> F:
    return click.option("-A", "--all-namespaces", "all_namespaces", is_flag=True, help="List across namespaces.")(func)


def _output(func: F) -> F:
    return click.option(
        "-o", "--output", type=click.Choice(["json", "yaml", "wide"]), default=None, help="Output format."
    )(func)


def _cluster(namespace: str | None, context: str | None, kubeconfig: str | None) -> Cluster:
    return Cluster.connect(kubeconfig=kubeconfig, context=context, namespace=namespace)


def _run(action: Callable[[], None]) -> None:
    try:
        action()
    except PluginError as error:
        click.echo(str(error), err=True)
        sys.exit(error.code)


def _now() -> datetime:
    return datetime.now(UTC)


def _print_table(table: Table, *, empty: str, wide: bool = False) -> None:
    """A kubectl-style table; `-o wide` shows every column whatever the terminal (as kubectl does)."""
    console = _console()
    if not table.rows:
        click.echo(empty, err=True)
        return
    fitted = table if wide else table.fit(console.width)
    out = RichTable(box=None, pad_edge=False, padding=(0, 3, 0, 0), show_edge=False, header_style="")
    for header in fitted.headers:
        out.add_column(header, no_wrap=True)
    for row in fitted.rows:
        out.add_row(*row)
    _emit(console, out, width=max(console.width, fitted.natural_width() + 4) if wide else console.width)


def _emit(console: Console, renderable: Any, *, width: int) -> None:
    """Print without the trailing spaces rich pads lines with (kubectl has none; diffs and greps care)."""
    narrower = console.width
    console.width = width  # print(width=...) cannot exceed the console's own width; -o wide must
    try:
        with console.capture() as captured:
            console.print(renderable)
    finally:
        console.width = narrower
    for line in captured.get().splitlines():
        console.out(line.rstrip(), highlight=False)


def _print_objects(items: Sequence[dict[str, Any]], output: str) -> None:
    document: dict[str, Any] = {"apiVersion": "v1", "kind": "List", "items": list(items), "metadata": {}}
    if output == "json":
        click.echo(json.dumps(document, indent=4))
    else:
        click.echo(yaml.safe_dump(document, sort_keys=False), nl=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stampede-operator")
def main() -> None:
    """kubectl stampede: StampedePolicies and their incidents, for the person on call."""


@main.command()
@_connection
@_all_namespaces
@_output
def get(
    namespace: str | None, context: str | None, kubeconfig: str | None, all_namespaces: bool, output: str | None
) -> None:
    """List policies: state, severity, phase, last incident, KPIs met."""

    def action() -> None:
        cluster = _cluster(namespace, context, kubeconfig)
        found = cluster.policies(all_namespaces=all_namespaces)
        if output in ("json", "yaml"):
            _print_objects(found, output)
            return
        table = policies_table(found, now=_now(), all_namespaces=all_namespaces, wide=output == "wide")
        where = "" if all_namespaces else f" in {cluster.namespace} namespace"
        _print_table(table, empty=f"No resources found{where}.", wide=output == "wide")

    _run(action)


@main.command()
@click.argument("policy", required=False)
@_connection
@_all_namespaces
@_output
def incidents(
    policy: str | None,
    namespace: str | None,
    context: str | None,
    kubeconfig: str | None,
    all_namespaces: bool,
    output: str | None,
) -> None:
    """List incidents, newest first (StampedeIncident records, else the policies' status history)."""

    def action() -> None:
        cluster = _cluster(namespace, context, kubeconfig)
        if policy and all_namespaces:
            raise PluginError("error: a policy name cannot be given with -A")
        records = cluster.records(all_namespaces=all_namespaces, policy=policy)
        if policy:
            cluster.policy(policy)  # exit 1 with kubectl's message when there is no such policy
        where = "" if all_namespaces else f" in {cluster.namespace} namespace"
        if records is not None:
            if output in ("json", "yaml"):
                _print_objects(records, output)
                return
            table = records_table(records, now=_now(), all_namespaces=all_namespaces)
        else:
            found = [cluster.policy(policy)] if policy else cluster.policies(all_namespaces=all_namespaces)
            if output in ("json", "yaml"):
                _print_objects([_history_object(p) for p in found], output)
                return
            table = history_table(found, now=_now(), all_namespaces=all_namespaces)
        _print_table(table, empty=f"No incidents found{where}.", wide=output == "wide")

    _run(action)


def _history_object(policy: dict[str, Any]) -> dict[str, Any]:
    status = policy.get("status") or {}
    return {
        "policy": policy["metadata"]["name"],
        "namespace": policy["metadata"].get("namespace"),
        "incident": status.get("incident"),
        "history": status.get("history") or [],
    }


@main.command()
@click.argument("policy")
@_connection
def describe(policy: str, namespace: str | None, context: str | None, kubeconfig: str | None) -> None:
    """The current or last incident of POLICY as a timeline, with its changes (and KPIs from its record)."""

    def action() -> None:
        cluster = _cluster(namespace, context, kubeconfig)
        found = cluster.policy(policy)
        records = cluster.records(all_namespaces=False, policy=policy) or []
        record = max(records, key=lambda r: str((r.get("status") or {}).get("startedAt") or ""), default=None)
        _print_story(story(found, cluster.events(policy), now=_now(), record=record))

    _run(action)


def _print_story(told: Story) -> None:
    console = _console()
    width = console.width
    facts = RichTable(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column(overflow="fold")
    for key, value in told.facts:
        facts.add_row(f"{key}:", value)
    console.print(Text(told.title, style="bold"))
    _emit(console, facts, width=width)
    for heading, table, empty in (
        ("Timeline", told.timeline, "no events recorded (events expire after an hour by default)"),
        ("Changes", told.changes, "none in force"),
        ("KPIs", told.kpis, ""),
    ):
        if table is None:
            continue
        console.print()
        console.print(Text(f"{heading}:", style="bold"))
        if not table.rows:
            console.print(f"  {empty}")
            continue
        fitted = table.fit(width - 2)
        out = RichTable(box=None, pad_edge=False, padding=(0, 2, 0, 0), show_edge=False, header_style="")
        for header in fitted.headers:
            wrap = header in ("WHAT HAPPENED", "CHANGE")
            out.add_column(header, no_wrap=not wrap, overflow="fold", ratio=1 if wrap else None)
        for row in fitted.rows:
            out.add_row(*row)
        _emit(console, out, width=width)
    if told.note:
        console.print()
        console.print(told.note)


def _patch_command(name: str, *, help_text: str, patch: dict[str, Any], done: str) -> None:
    @main.command(name=name, help=help_text)
    @click.argument("policy")
    @_connection
    def command(policy: str, namespace: str | None, context: str | None, kubeconfig: str | None) -> None:
        def action() -> None:
            cluster = _cluster(namespace, context, kubeconfig)
            cluster.patch_policy(policy, patch)
            click.echo(f"stampedepolicy.{GROUP}/{policy} {done}")

        _run(action)


_patch_command(
    "suspend",
    help_text="Keep polling and reporting, but take no action and no rollback (spec.suspend: true).",
    patch={"spec": {"suspend": True}},
    done="suspended",
)
_patch_command(
    "resume", help_text="Undo suspend (spec.suspend: false).", patch={"spec": {"suspend": False}}, done="resumed"
)
_patch_command(
    "hold",
    help_text=f"Enter no new phase and apply no new action; keep what is applied (annotation {HOLD}).",
    patch={"metadata": {"annotations": {HOLD: "true"}}},
    done="held",
)
_patch_command(
    "release",
    help_text=f"Undo hold (removes annotation {HOLD}).",
    patch={"metadata": {"annotations": {HOLD: None}}},
    done="released",
)
_patch_command(
    "rollback-now",
    help_text=f"Start rolling back now, as if recovered (annotation {ROLLBACK_NOW}; the operator removes it).",
    patch={"metadata": {"annotations": {ROLLBACK_NOW: "true"}}},
    done="rollback requested",
)


@main.command()
@click.argument("policy")
@_connection
@click.option("--incident", "incident", metavar="ID", help="Incident id (default: the latest record of the policy).")
@click.option("--prometheus", "prometheus_url", metavar="URL", help="Prometheus to read the signals' history from.")
@click.option("--output-dir", "output_dir", default=".", show_default=True, type=click.Path(file_okay=False))
def report(
    policy: str,
    namespace: str | None,
    context: str | None,
    kubeconfig: str | None,
    incident: str | None,
    prometheus_url: str | None,
    output_dir: str,
) -> None:
    """Write a postmortem draft (.md) and a plot (.png) of an incident: `stampede report`, with kubectl's options."""

    def action() -> None:
        cluster = _cluster(namespace, context, kubeconfig)  # the context's namespace, as every command uses
        argv = [sys.executable, "-m", "stampede.cli", "report", "-n", cluster.namespace, policy]
        argv += ["--output-dir", output_dir]
        for flag, value in (
            ("--incident", incident),
            ("--prometheus", prometheus_url),
            ("--context", context),
            ("--kubeconfig", kubeconfig),
        ):
            if value:
                argv += [flag, value]
        done = subprocess.run(argv, check=False)  # its output and exit code are this command's
        if done.returncode:
            sys.exit(done.returncode)

    _run(action)


if __name__ == "__main__":
    main()
