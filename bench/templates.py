"""Templates at scale: 500 policies on one ClusterStampedePolicyTemplate, and one edit of the template.

What it answers (issue 14: "this must not cost a poll per template per policy"):

- API requests the operator makes for templates: kopf lists and watches each template kind once; no
  policy's poll reads its template. Counted from the harness request log, by verb and resource, in a
  steady window and in the window from the template edit until all 500 policies report the new
  `status.templateGeneration`.
- How long the edit takes to reach every policy, against the poll interval (wall-clock; the machine is
  shared, so read it with `machine`).
- Render cost in the operator's code path (`TemplateStore.policy_spec`), in this process: rendering
  and validating 500 policies after an edit, and serving them from the per-policy cache on the polls
  in between. CPU seconds, not wall-clock.

    .venv/bin/python bench/templates.py [--policies 500] [--poll 10]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from common import ROOT, log, machine
from tests.e2e.stack import GROUP, PLURAL, VERSION, Stack

from stampede.handlers.templates import TemplateStore, entry_of

NAMESPACES = 10
TEMPLATES = "clusterstampedepolicytemplates"
NAME = "bench-runbook"


def template(poll: float) -> dict[str, Any]:
    """The example runbook (examples/many-services.yaml) with queries Prometheus answers without data."""
    doc: dict[str, Any] = next(yaml.safe_load_all((ROOT / "examples" / "many-services.yaml").read_text()))
    policy = doc["spec"]["policy"]
    policy["pollInterval"] = f"{poll:g}s"
    policy["prometheus"].pop("url", None)
    for signal in policy["signals"]:
        signal["query"] = "vector(1)"  # one shared query: the bench measures templates, not Prometheus
    doc["metadata"] = {"name": NAME}
    doc["spec"]["parameters"] = [p for p in doc["spec"]["parameters"] if p["name"] != "prometheus"]
    return doc


def policy(i: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "StampedePolicy",
        "metadata": {"name": f"svc-{i}", "namespace": f"tpl-{i % NAMESPACES}"},
        "spec": {
            "templateRef": {"kind": "ClusterStampedePolicyTemplate", "name": NAME},
            "arguments": {"service": f"svc-{i}", "maxReplicas": str(4 + i % 8)},
        },
    }


def render_cost(count: int, poll: float) -> dict[str, Any]:
    """CPU seconds of the operator's render path for `count` policies: after an edit, and per poll after."""
    doc = template(poll)
    store = TemplateStore()
    index: dict[Any, Any] = {NAME: [entry_of({**doc, "metadata": {**doc["metadata"], "resourceVersion": "1"}})]}
    store.attach(namespaced={}, cluster=index)
    store.cluster_served = True
    bodies = [policy(i) for i in range(count)]
    before = time.process_time()
    for body in bodies:
        store.policy_spec(body)
    first = time.process_time() - before
    before = time.process_time()
    polls = 10
    for _ in range(polls):
        for body in bodies:
            store.policy_spec(body)
    cached = (time.process_time() - before) / polls
    edited = {**doc, "metadata": {**doc["metadata"], "resourceVersion": "2"}}
    edited["spec"]["policy"]["severities"][2]["for"] = "3m"
    index[NAME] = [entry_of(edited)]
    before = time.process_time()
    for body in bodies:
        store.policy_spec(body)
    after_edit = time.process_time() - before
    return {
        "policies": count,
        "renders": store.renders,
        "first_render_all_cpu_s": round(first, 3),
        "render_after_edit_all_cpu_s": round(after_edit, 3),
        "render_per_policy_ms": round(after_edit / count * 1000, 3),
        "cached_poll_all_cpu_s": round(cached, 5),
        "cached_per_policy_us": round(cached / count * 1e6, 1),
    }


def counts(stack: Stack, *, since: int, until: float | None = None) -> dict[str, int]:
    found: Counter[str] = Counter()
    for r in stack.harness.log.entries(since=since):
        if until is not None and r.time > until:
            continue
        found[f"{r.verb} {r.resource}" + (f"/{r.subresource}" if r.subresource else "")] += 1
    return dict(sorted(found.items()))


def generations(stack: Stack) -> Counter[int | None]:
    info = stack.harness.store.info(GROUP, VERSION, PLURAL)

    def read() -> Counter[int | None]:
        return Counter(
            (obj.get("status") or {}).get("templateGeneration") for obj in stack.harness.store._bucket(info).values()
        )

    result: Counter[int | None] = stack.harness.call(read)
    return result


def wait(what: str, predicate: Any, *, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"{what} not reached within {timeout:g}s")


def run(*, count: int, poll: float) -> dict[str, Any]:
    result: dict[str, Any] = {"policies": count, "poll_interval_s": poll, "machine": {"before": machine()}}
    result["render"] = render_cost(count, poll)
    log(f"templates: render cost {result['render']}")
    with Stack(start_operator=False) as stack:
        assert stack.operator is not None
        stack.harness.apply(
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"tpl-{n}"}} for n in range(NAMESPACES)]
        )
        stack.custom.create_cluster_custom_object(GROUP, VERSION, TEMPLATES, template(poll))
        docs = [policy(i) for i in range(count)]
        for start in range(0, len(docs), 50):
            stack.harness.apply(docs[start : start + 50])
        stack.operator.start()
        first = stack.custom.get_cluster_custom_object(GROUP, VERSION, TEMPLATES, NAME)["metadata"]["generation"]
        started = stack.harness.log.last_id
        result["all_rendered_after_start_s"] = round(
            wait(f"{count} policies on generation {first}", lambda: generations(stack)[first] == count, timeout=600), 1
        )
        result["startup_requests"] = counts(stack, since=started)
        # A steady window of three polls: what the template costs while nothing changes.
        mark = stack.harness.log.last_id
        time.sleep(3 * poll)
        steady = counts(stack, since=mark)
        result["steady_3_polls_requests"] = steady
        edited = template(poll)
        edited["spec"]["policy"]["severities"][2]["for"] = "3m"
        mark = stack.harness.log.last_id
        t0 = time.monotonic()
        stack.custom.patch_cluster_custom_object(GROUP, VERSION, TEMPLATES, NAME, {"spec": edited["spec"]})
        second = stack.custom.get_cluster_custom_object(GROUP, VERSION, TEMPLATES, NAME)["metadata"]["generation"]
        reached = wait(
            f"{count} policies on generation {second}", lambda: generations(stack)[second] == count, timeout=600
        )
        result["edit"] = {
            "all_policies_on_new_generation_after_s": round(reached, 1),
            "in_poll_intervals": round(reached / poll, 2),
            "requests_until_all_reached": counts(stack, since=mark, until=time.time()),
            "wall_s": round(time.monotonic() - t0, 1),
        }
        template_requests = {
            k: v for k, v in result["edit"]["requests_until_all_reached"].items() if "policytemplates" in k
        }
        result["edit"]["template_requests"] = template_requests
        result["edit"]["template_requests_note"] = (
            "the bench's own patch and get of the template; the operator's watch delivered the change"
        )
    result["machine"]["after"] = machine()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", type=int, default=500)
    parser.add_argument("--poll", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(count=args.policies, poll=args.poll)
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
