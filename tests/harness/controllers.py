"""Asynchronous controllers: the writers a real cluster always has between a client's read and its write.

A real cluster's deployment controller reports rollout progress in `status` several times over a
second or two after a template or replica change, an HPA controller keeps its target's replicas
within `[minReplicas, maxReplicas]`, and the job controller fills in Job status. Every such write
bumps the object's resourceVersion, so a client's read-modify-write with that version gets 409. The
store's own `_simulate` (status follows spec at once, in the same write) hides exactly that, so
these controllers write later, on the event loop, as separate commits.

Their writes are recorded in the request log with `actor` set to the controller's name, so tests
that count the operator's writes ("zero target writes") keep counting only clients
(`RequestLog.entries` leaves controller records out unless asked).

Sources: pkg/controller/deployment (sync.go syncRolloutStatus, calculateStatus), pkg/controller/podautoscaler
(horizontal.go normalizeDesiredReplicas: the [min, max] clamp of a metrics recommendation, here fixed
or set by annotation), pkg/controller/job (job_controller.go).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .store import ApiError, Change, Obj, Store, now_iso

if TYPE_CHECKING:
    from .server import RequestLog

#: Seconds after a spec change at which the deployment controller reports progress, and the share of
#: replicas updated by then (maxSurge 25 % rounds to one extra pod while the rollout is under way).
ROLLOUT_STEPS: tuple[tuple[float, float], ...] = ((0.3, 0.34), (0.8, 0.67), (1.5, 1.0))
HPA_SYNC_DELAY = 0.2
JOB_STEPS: tuple[tuple[float, str], ...] = ((0.2, "active"), (1.0, "succeeded"))

DEPLOYMENT_CONTROLLER = "deployment-controller"
STATEFULSET_CONTROLLER = "statefulset-controller"
HPA_CONTROLLER = "horizontal-pod-autoscaler"
JOB_CONTROLLER = "job-controller"
#: On an HPA: the replicas its metrics would recommend (the harness has no metrics pipeline).
METRIC_REPLICAS = "harness.k8s.io/metric-replicas"
#: On a Deployment or StatefulSet: its rollouts never complete (pods that never become available), as
#: a crash-looping image does; the controller reports progress but stops short of the last step.
ROLLOUT_STALLS = "harness.k8s.io/rollout-stalls"


class Controllers:
    """Subscribes to the store's commits and writes back later, as the kube-controller-manager would."""

    def __init__(self, *, store: Store, log: RequestLog) -> None:
        self.store = store
        self.log = log
        self._timers: list[asyncio.TimerHandle] = []
        self._recommendations: dict[tuple[str, str, str], int] = {}
        store.listeners.append(self._on_change)

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    # -- scheduling ----------------------------------------------------------------------------

    def _later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # a store used without a server (plain unit tests) has no controllers running
        self._timers = [t for t in self._timers if not t.cancelled()]
        self._timers.append(loop.call_later(delay, self._guarded, fn, args))

    @staticmethod
    def _guarded(fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        with contextlib.suppress(ApiError):  # the object changed or went away meanwhile: nothing to do
            fn(*args)

    def _on_change(self, change: Change) -> None:
        strictness = self.store.strictness
        meta = change.obj.get("metadata", {})
        ns, name = meta.get("namespace"), meta.get("name")
        if change.type == "DELETED":
            return
        if change.key in (("apps", "deployments"), ("apps", "statefulsets")):
            generation = meta.get("generation", 1)
            old_generation = (change.old or {}).get("metadata", {}).get("generation")
            if strictness.rollout_controller and generation != old_generation:
                for delay, share in ROLLOUT_STEPS:
                    self._later(delay, self._rollout_step, change.key, ns, name, generation, share)
            if strictness.hpa_controller and generation != old_generation:
                for hpa in self._hpas_for(ns, change.obj.get("kind", ""), name):
                    self._later(HPA_SYNC_DELAY, self._hpa_sync, ns, hpa)
        elif change.key == ("autoscaling", "horizontalpodautoscalers") and strictness.hpa_controller:
            if change.old is None or change.old.get("spec") != change.obj.get("spec"):
                self._later(HPA_SYNC_DELAY, self._hpa_sync, ns, name)
        elif change.key == ("batch", "jobs") and strictness.job_controller and change.type == "ADDED":
            for delay, phase in JOB_STEPS:
                self._later(delay, self._job_step, ns, name, phase)

    # -- writing, as a client other than the operator ---------------------------------------------

    def _write(
        self,
        key: tuple[str, str],
        ns: str | None,
        name: str,
        *,
        manager: str,
        subresource: str | None,
        edit: Callable[[Obj], None],
    ) -> None:
        group = key[0]
        info = next(i for i in self.store.catalogue if i.key == key)
        current = self.store.get(info, namespace=ns, name=name)
        if current["metadata"].get("deletionTimestamp"):
            return
        wanted = copy.deepcopy(current)
        edit(wanted)
        if wanted == current:
            return
        started = time.monotonic()
        self.store.replace(info, namespace=ns, name=name, body=wanted, subresource=subresource, field_manager=manager)
        self._record(
            info.api_version,
            info.plural,
            ns,
            name,
            subresource=subresource,
            manager=manager,
            duration=time.monotonic() - started,
            group=group,
        )

    def _record(
        self,
        api_version: str,
        plural: str,
        ns: str | None,
        name: str,
        *,
        subresource: str | None,
        manager: str,
        duration: float,
        group: str,
    ) -> None:
        from .server import RequestRecord  # the server imports this module; the record type lives there

        prefix = f"/apis/{api_version}" if group else f"/api/{api_version}"
        path = f"{prefix}/namespaces/{ns}/{plural}/{name}" + (f"/{subresource}" if subresource else "")
        self.log.add(
            RequestRecord(
                id=self.log.new_id(),
                time=time.time(),
                method="PUT",
                path=path,
                query={},
                verb="update",
                group=group,
                version=api_version.rsplit("/", 1)[-1],
                resource=plural,
                subresource=subresource,
                namespace=ns,
                name=name,
                field_manager=manager,
                user_agent=f"kube-controller-manager/{manager}",
                content_type="application/json",
                status=200,
                duration=duration,
                actor=manager,
            )
        )

    # -- the deployment and statefulset controllers --------------------------------------------

    def _rollout_step(self, key: tuple[str, str], ns: str, name: str, generation: int, share: float) -> None:
        manager = DEPLOYMENT_CONTROLLER if key == ("apps", "deployments") else STATEFULSET_CONTROLLER

        def edit(obj: Obj) -> None:
            if obj["metadata"].get("generation", 1) != generation:
                return  # a newer change started its own rollout
            if share >= 1.0 and ROLLOUT_STALLS in (obj["metadata"].get("annotations") or {}):
                return
            wanted = (obj.get("spec") or {}).get("replicas", 1)
            status = obj.setdefault("status", {})
            updated = math.ceil(wanted * share)
            done = share >= 1.0
            status["observedGeneration"] = generation
            status["updatedReplicas"] = updated
            status["replicas"] = wanted if done or wanted == 0 else wanted + 1
            status["readyReplicas"] = wanted if done else min(wanted, status.get("readyReplicas", 0))
            status["availableReplicas"] = status["readyReplicas"]
            if key == ("apps", "statefulsets"):
                status["currentReplicas"] = updated

        self._write(key, ns, name, manager=manager, subresource="status", edit=edit)

    # -- the HPA controller --------------------------------------------------------------------

    def _hpas_for(self, ns: str | None, kind: str, name: str | None) -> list[str]:
        info = self.store.info("autoscaling", "v2", "horizontalpodautoscalers")
        return [
            hpa["metadata"]["name"]
            for hpa in self.store.list(info, namespace=ns)
            if (hpa.get("spec") or {}).get("scaleTargetRef", {}).get("kind") == kind
            and hpa["spec"]["scaleTargetRef"].get("name") == name
        ]

    def _hpa_sync(self, ns: str, hpa_name: str) -> None:
        hpa_info = self.store.info("autoscaling", "v2", "horizontalpodautoscalers")
        hpa = self.store.get(hpa_info, namespace=ns, name=hpa_name)
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        key = {"Deployment": ("apps", "deployments"), "StatefulSet": ("apps", "statefulsets")}.get(ref.get("kind", ""))
        if key is None:
            return
        target_info = next(i for i in self.store.catalogue if i.key == key)
        target = self.store.get(target_info, namespace=ns, name=ref.get("name", ""))
        current = (target.get("spec") or {}).get("replicas", 1)
        low, high = spec.get("minReplicas") or 1, spec.get("maxReplicas") or current
        # There are no metrics here: what they would recommend is the annotation METRIC_REPLICAS when a
        # test sets it, else the target's replicas when this HPA first synced. Like the real controller
        # (normalizeDesiredReplicas), the recommendation is then clamped to [minReplicas, maxReplicas],
        # so a raised minimum scales the target up and a restored one lets it come back down.
        seen = (ns, hpa_name, hpa["metadata"]["uid"])
        annotated = (hpa["metadata"].get("annotations") or {}).get(METRIC_REPLICAS)
        recommendation = int(annotated) if annotated else self._recommendations.setdefault(seen, current)
        desired = min(max(recommendation, low), high)

        def scale(obj: Obj) -> None:
            obj.setdefault("spec", {})["replicas"] = desired

        if desired != current:
            self._write(key, ns, ref["name"], manager=HPA_CONTROLLER, subresource=None, edit=scale)

        def status(obj: Obj) -> None:
            st = obj.setdefault("status", {})
            st["currentReplicas"] = current
            st["desiredReplicas"] = desired
            if desired != current:
                st["lastScaleTime"] = now_iso()

        self._write(
            ("autoscaling", "horizontalpodautoscalers"),
            ns,
            hpa_name,
            manager=HPA_CONTROLLER,
            subresource="status",
            edit=status,
        )

    # -- the job controller --------------------------------------------------------------------

    def _job_step(self, ns: str, name: str, phase: str) -> None:
        def edit(obj: Obj) -> None:
            status = obj.setdefault("status", {})
            if phase == "active":
                status.setdefault("startTime", now_iso())
                status["active"] = 1
            else:
                status.pop("active", None)
                status["succeeded"] = 1
                status["completionTime"] = now_iso()
                status["conditions"] = [
                    {"type": "Complete", "status": "True", "lastProbeTime": now_iso(), "lastTransitionTime": now_iso()}
                ]

        self._write(("batch", "jobs"), ns, name, manager=JOB_CONTROLLER, subresource="status", edit=edit)
