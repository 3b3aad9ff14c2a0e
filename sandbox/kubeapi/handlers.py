"""The REST verbs over the store: get/list/create/update/patch/delete, the scale and status
subresources, SelfSubjectAccessReview and watch. No HTTP here: bodies in, Responses out."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.kubeapi import errors, objects, patch, schema, tables
from sandbox.kubeapi.rbac import Attributes, Authorizer, user_groups
from sandbox.kubeapi.resources import ResourceType
from sandbox.kubeapi.routing import RequestInfo
from sandbox.kubeapi.selectors import field_matcher, label_matcher
from sandbox.kubeapi.store import Obj, Store, WatchEvent

DEFAULT_WATCH_SECONDS = 1800


@dataclass
class Response:
    code: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterator[Obj] | None = None  # watch events


@dataclass
class Request:
    info: RequestInfo
    user: str
    body: Any  # parsed JSON/YAML, or None
    content_type: str
    accept: str


class Handlers:
    def __init__(
        self,
        *,
        store: Store,
        authorizer: Authorizer | None,
        auto_status: bool,
        now: Callable[[], datetime],
        stopping: Callable[[], bool],
    ) -> None:
        self.store = store
        self.authorizer = authorizer
        self.auto_status = auto_status
        self.now = now
        self.stopping = stopping

    def handle(self, req: Request) -> Response:
        info, rt = req.info, req.info.rt
        assert rt is not None
        if info.verb not in rt.verbs:
            raise errors.ApiError(code=405, message=f"{info.verb} is not supported on {rt.plural}")
        if "dryRun" in info.query:
            raise errors.bad_request("dryRun is not supported by the AegisOps emulator")
        if rt.kind == "SelfSubjectAccessReview":
            return self._access_review(req)
        if info.subresource and info.subresource not in rt.subresources:
            raise errors.resource_not_found()
        if info.verb == "create" and info.name:
            raise errors.ApiError(
                code=405, message="the server does not allow this method on the requested resource"
            )
        verb: Callable[[Request, ResourceType], Response] = getattr(self, f"_{info.verb}")
        return verb(req, rt)

    # ---- helpers ----

    @staticmethod
    def _ns(req: Request, rt: ResourceType) -> str:
        return (req.info.namespace or "") if rt.namespaced else ""

    def _finish(self, rt: ResourceType, obj: Obj) -> Obj:
        if self.auto_status and rt.kind == "Deployment":
            return objects.auto_status(obj)
        return obj

    def _view(self, req: Request, obj: Obj) -> Obj:
        return objects.to_scale(obj) if req.info.subresource == "scale" else obj

    def _check_fields(self, req: Request, rt: ResourceType, obj: Obj, warnings: list[str]) -> Obj:
        """Wrong JSON types or a bad MicroTime -> 400 like kube's decoder (MicroTimes are
        stored normalized, as kube writes them back); unknown fields per fieldValidation:
        Strict -> 400 naming them, Warn (default) -> dropped with a Warning, Ignore -> dropped."""
        if rt.custom:
            return obj
        kind = "Scale" if req.info.subresource == "scale" else rt.kind
        cannot = f'{kind} in version "{rt.version}" cannot be handled as a {kind}'
        node = self._schema(req, rt)
        wrong_type = schema.type_error(obj, node, struct=kind)
        if wrong_type:
            raise errors.bad_request(f"{cannot}: {wrong_type}")
        try:
            obj = schema.microtimes(obj, node)
        except ValueError as err:
            raise errors.bad_request(f"{cannot}: {err}") from None
        unknown = schema.unknown_fields(obj, node)
        if not unknown:
            return obj
        mode = req.info.query.get("fieldValidation", "Warn")
        listed = ", ".join(f'unknown field "{path}"' for path in unknown)
        if mode == "Strict":
            raise errors.bad_request(f"{cannot}: strict decoding error: {listed}")
        if mode != "Ignore":
            warnings.extend(f'unknown field "{path}"' for path in unknown)
        pruned: Obj = schema.prune_unknown(obj, node)
        return pruned

    @staticmethod
    def _schema(req: Request, rt: ResourceType) -> schema.Node | None:
        if rt.custom:
            return None
        if req.info.subresource == "scale":
            return schema.kind_schema(group="autoscaling", version="v1", kind="Scale")
        return schema.kind_schema(group=rt.group, version=rt.version, kind=rt.kind)

    @staticmethod
    def _answer(code: int, body: Obj, warnings: list[str]) -> Response:
        headers = {}
        if warnings:
            headers["Warning"] = ", ".join(f"299 - {json.dumps(w)}" for w in warnings)
        return Response(code, body, headers)

    def _body_object(self, req: Request) -> Obj:
        if not isinstance(req.body, dict):
            raise errors.bad_request("the body of the request must be a JSON or YAML object")
        return copy.deepcopy(req.body)

    def _check_identity(self, req: Request, rt: ResourceType, body: Obj) -> None:
        expected = "autoscaling/v1" if req.info.subresource == "scale" else rt.api_version
        got = body.get("apiVersion")
        if got not in (None, "", expected) and req.info.subresource != "status":
            raise errors.bad_request(
                f"the API version in the data ({got}) does not match"
                f" the expected API version ({expected})"
            )
        meta = body.get("metadata") or {}
        ns = meta.get("namespace")
        if rt.namespaced and ns not in (None, "", req.info.namespace):
            raise errors.bad_request(
                "the namespace of the provided object does not match"
                " the namespace sent on the request"
            )
        if req.info.name and meta.get("name") not in (None, "", req.info.name):
            raise errors.name_mismatch(meta.get("name"), req.info.name)

    # ---- verbs ----

    def _get(self, req: Request, rt: ResourceType) -> Response:
        obj = self.store.get(rt, self._ns(req, rt), req.info.name or "")
        if tables.wants_table(req.accept) and not req.info.subresource:
            rv = obj["metadata"]["resourceVersion"]
            return Response(200, tables.table(rt, [obj], resource_version=rv, now=self.now()))
        return Response(200, self._view(req, obj))

    def _matcher(self, req: Request) -> Callable[[Obj], bool]:
        labels = label_matcher(req.info.query.get("labelSelector"))
        fields = field_matcher(req.info.query.get("fieldSelector"))
        return lambda obj: labels(obj) and fields(obj)

    def _list(self, req: Request, rt: ResourceType) -> Response:
        namespace = req.info.namespace if rt.namespaced else None
        items, rv = self.store.select(rt, namespace, match=self._matcher(req))
        if tables.wants_table(req.accept):
            return Response(200, tables.table(rt, items, resource_version=str(rv), now=self.now()))
        for item in items:
            item.pop("apiVersion", None)
            item.pop("kind", None)
        body = {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        }
        return Response(200, body)

    def _create(self, req: Request, rt: ResourceType) -> Response:
        body = self._body_object(req)
        self._check_identity(req, rt, body)
        if body.get("kind") not in (None, "", rt.kind):
            raise errors.bad_request(
                f'{body.get("kind")} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                "the kind in the data does not match the resource on the URL"
            )
        warnings: list[str] = []
        body = self._check_fields(req, rt, body, warnings)
        namespace = self._ns(req, rt)
        obj = objects.prepare_new(rt, namespace, body)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            objects.validate(rt, {**obj, "metadata": {**meta, "name": meta["generateName"] + "x"}})
        else:
            objects.validate(rt, obj)
        created = self.store.create(rt, namespace, self._finish(rt, obj))
        return self._answer(201, created, warnings)

    def _write(
        self, req: Request, rt: ResourceType, produce: Callable[[Obj], Obj], warnings: list[str]
    ) -> Obj:
        """Read-modify-write through the store; `produce` maps the current object (as the
        client sees it: Deployment or Scale) to the desired one of the same view."""
        sub = req.info.subresource

        def mutate(current: Obj) -> Obj:
            desired = self._check_fields(req, rt, produce(self._view(req, current)), warnings)
            if sub == "scale":
                merged = objects.from_scale(rt, current, desired)
            elif sub == "status":
                merged = objects.merge_status(current, desired)
            else:
                self._check_identity(req, rt, desired)
                merged = objects.merge_main(rt, current, desired)
                objects.validate(rt, merged)
            return merged

        finish = lambda obj: self._finish(rt, obj)  # noqa: E731
        return self.store.update(rt, self._ns(req, rt), req.info.name or "", mutate, finish)

    def _update(self, req: Request, rt: ResourceType) -> Response:
        body = self._body_object(req)
        self._check_identity(req, rt, body)
        warnings: list[str] = []
        updated = self._write(req, rt, lambda _current: body, warnings)
        return self._answer(200, self._view(req, updated), warnings)

    def _patch(self, req: Request, rt: ResourceType) -> Response:
        kind = req.content_type
        if kind == patch.STRATEGIC and rt.custom:  # kube: no SMP for custom resources
            raise errors.unsupported_media((patch.JSON_PATCH, patch.MERGE, patch.APPLY))
        if kind not in patch.SUPPORTED:
            raise errors.unsupported_media(patch.SUPPORTED)
        node = self._schema(req, rt)

        def produce(current: Obj) -> Obj:
            return patch.apply_patch(
                content_type=kind, original=current, patch=req.body, schema=node
            )

        warnings: list[str] = []
        updated = self._write(req, rt, produce, warnings)
        return self._answer(200, self._view(req, updated), warnings)

    def _delete(self, req: Request, rt: ResourceType) -> Response:
        gone = self.store.delete(rt, self._ns(req, rt), req.info.name or "")
        details = {
            "name": gone["metadata"]["name"],
            "kind": rt.plural,
            "uid": gone["metadata"]["uid"],
        }
        if rt.group:
            details["group"] = rt.group
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }
        return Response(200, body)

    def _deletecollection(self, req: Request, rt: ResourceType) -> Response:
        namespace = req.info.namespace if rt.namespaced else None
        items, _ = self.store.select(rt, namespace, match=self._matcher(req))
        for item in items:
            meta = item["metadata"]
            self.store.delete(rt, meta.get("namespace", ""), meta["name"])
        body = {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self.store.resource_version)},
            "items": items,
        }
        return Response(200, body)

    def _access_review(self, req: Request) -> Response:
        body = self._body_object(req)
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        resource = attrs.get("resource", "")
        if attrs.get("subresource"):
            resource = f"{resource}/{attrs['subresource']}"
        if self.authorizer is None:
            status = {"allowed": True, "reason": "RBAC mode is off in the emulator"}
        else:
            decision = self.authorizer.decide(
                Attributes(
                    user=req.user,
                    groups=user_groups(req.user),
                    verb=attrs.get("verb", ""),
                    group=attrs.get("group", ""),
                    resource=resource,
                    namespace=attrs.get("namespace", ""),
                    name=attrs.get("name", ""),
                )
            )
            status = {"allowed": decision.allowed}
            if decision.reason:
                status["reason"] = decision.reason
        body.update(
            apiVersion="authorization.k8s.io/v1", kind="SelfSubjectAccessReview", status=status
        )
        body.setdefault("metadata", {})["creationTimestamp"] = None
        return Response(201, body)

    # ---- watch ----

    def _watch(self, req: Request, rt: ResourceType) -> Response:
        raw_rv = req.info.query.get("resourceVersion", "")
        try:
            timeout = float(req.info.query.get("timeoutSeconds") or DEFAULT_WATCH_SECONDS)
            start_rv = int(raw_rv) if raw_rv else 0
        except ValueError as exc:
            raise errors.bad_request(f"invalid watch parameter: {exc}") from exc
        match = self._matcher(req)
        return Response(200, None, stream=self._events(req, rt, start_rv, timeout, match))

    def _events(
        self, req: Request, rt: ResourceType, rv: int, timeout: float, match: Callable[[Obj], bool]
    ) -> Iterator[Obj]:
        deadline = time.monotonic() + timeout
        namespace = req.info.namespace if rt.namespaced else None
        table = tables.wants_table(req.accept)

        def shape(kind: str, obj: Obj) -> Obj:
            if table:
                meta_rv = obj["metadata"]["resourceVersion"]
                obj = tables.table(rt, [obj], resource_version=meta_rv, now=self.now())
            return {"type": kind, "object": obj}

        if rv == 0:
            items, rv = self.store.select(rt, namespace, match=match)
            for item in items:
                yield shape("ADDED", item)
        key = (rt.group, rt.plural)
        while time.monotonic() < deadline and not self.stopping() and not self.store.closed:
            try:
                events = self.store.events_after(rv)
            except errors.ApiError as exc:
                yield {"type": "ERROR", "object": exc.status()}
                return
            for event in events:
                rv = event.rv
                if event.key != key or (namespace is not None and event.namespace != namespace):
                    continue
                seen = filtered_event(event, match)
                if seen is not None:
                    yield shape(*seen)
            if not events:
                self.store.wait_beyond(rv, min(0.25, max(0.0, deadline - time.monotonic())))


def filtered_event(event: WatchEvent, match: Callable[[Obj], bool]) -> tuple[str, Obj] | None:
    """What a watch with a selector sees, as kube's cacheWatcher translates it: an object
    that starts matching is ADDED, one that stops matching is DELETED (its previous
    content at the event's resourceVersion), a change outside the selector is nothing."""
    now_matches = event.type != "DELETED" and match(event.obj)
    was_matching = event.prev is not None and match(event.prev)
    if now_matches:
        return ("MODIFIED" if was_matching else "ADDED"), copy.deepcopy(event.obj)
    if was_matching and event.prev is not None:
        gone = copy.deepcopy(event.prev)
        gone["metadata"]["resourceVersion"] = event.obj["metadata"]["resourceVersion"]
        return "DELETED", gone
    return None
