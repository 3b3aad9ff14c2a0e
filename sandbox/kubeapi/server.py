"""`KubeAPIServer`: the emulator's lifecycle and the Python API tests call."""

from __future__ import annotations

import base64
import re
import secrets
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import trustme
import yaml

from sandbox.kubeapi import errors, objects, patch
from sandbox.kubeapi.faults import _ANY, Fault, FaultSet, RequestEntry, RequestLog
from sandbox.kubeapi.handlers import Handlers
from sandbox.kubeapi.rbac import Authorizer, RuleRef, load_files
from sandbox.kubeapi.resources import CATALOG, ResourceType, lookup_kind, resource_named
from sandbox.kubeapi.store import Obj, Store, utc_now
from sandbox.kubeapi.wire import App, KubeHTTPServer

ADMIN_USER = "kubernetes-admin"
_RBAC_PLURALS = ("roles", "rolebindings", "clusterroles", "clusterrolebindings")


def resolve(resource: str) -> ResourceType:
    """`deployments`, `deploy`, `Deployment` or `deployments.apps` -> its ResourceType."""
    plural, _, group = resource.partition(".")
    if group:
        for rt in CATALOG:
            if rt.plural == plural and rt.group == group:
                return rt
    found = resource_named(resource)
    if found is None:
        raise KeyError(f"the emulator does not serve a resource named {resource!r}")
    return found


class KubeAPIServer:
    """A stateful Kubernetes API emulator on 127.0.0.1 (HTTP or HTTPS), in threads.

    tokens: bearer token -> user name (plus an admin token, user `kubernetes-admin`,
    group `system:masters`). RBAC mode is on when `rbac_files` is given (even empty):
    then only what Roles/ClusterRoles bound to a user grant is allowed.
    """

    def __init__(
        self,
        *,
        tls: bool = True,
        port: int = 0,
        tokens: dict[str, str] | None = None,
        rbac_files: Iterable[str | Path] | None = None,
        auto_status: bool = False,
        watch_history: int = 1000,
        seed: int = 0,
        namespaces: Iterable[str] = ("default", "kube-system"),
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.tls = tls
        self._port = port
        self.admin_token = secrets.token_hex(16)
        self._tokens = {**(tokens or {}), self.admin_token: ADMIN_USER}
        self._rbac_static = load_files(rbac_files) if rbac_files is not None else None
        self._now = now
        self.store = Store(history=watch_history, seed=seed, now=now)
        self.log = RequestLog()
        self.faults = FaultSet()
        self.authorizer = (
            Authorizer(objects=self._rbac_objects, admins=frozenset({ADMIN_USER}))
            if self._rbac_static is not None
            else None
        )
        self._stopping = threading.Event()
        self._handlers = Handlers(
            store=self.store,
            authorizer=self.authorizer,
            auto_status=auto_status,
            now=now,
            stopping=self._stopping.is_set,
        )
        self.auto_status = auto_status
        self._namespaces = tuple(namespaces)
        self._tmp: Path | None = None
        self._httpd: KubeHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.ca_path: Path | None = None

    # ---- lifecycle ----

    def start(self) -> KubeAPIServer:
        """Bind, then serve. On any failure (a busy port...) nothing is left behind."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> KubeAPIServer:
        self._tmp = Path(tempfile.mkdtemp(prefix="aegisops-kubeapi-"))
        context = self._tls_context(self._tmp) if self.tls else None
        for name in self._namespaces:
            if not self.store.namespace_exists(name):
                self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        app = App(
            handlers=self._handlers,
            tokens=lambda: dict(self._tokens),
            authorizer=self.authorizer,
            faults=self.faults,
            log=self.log,
        )
        self._httpd = KubeHTTPServer(app, context, port=self._port)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="kubeapi-serve",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.store.close()
        if self._httpd is not None:
            self._httpd.close_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._httpd = self._thread = self._tmp = None

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _tls_context(self, tmp: Path) -> ssl.SSLContext:
        ca = trustme.CA(organization_name="AegisOps emulator CA", key_type=trustme.KeyType.ECDSA)
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_path = tmp / "ca.crt"
        ca.cert_pem.write_to_path(str(self.ca_path))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        return context

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the emulator is not running: call start() or use `with`")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    # ---- credentials ----

    def add_token(self, token: str, user: str) -> None:
        self._tokens[token] = user

    def write_kubeconfig(
        self, path: str | Path, *, token: str | None = None, namespace: str = "default"
    ) -> Path:
        """A kubeconfig `kubectl --kubeconfig PATH` and the official client use as is."""
        token = token or self.admin_token
        if token not in self._tokens:
            raise KeyError("unknown token: register it with tokens= or add_token()")
        cluster: dict[str, Any] = {"server": self.url}
        if self.ca_path is not None:
            cluster["certificate-authority-data"] = base64.b64encode(
                self.ca_path.read_bytes()
            ).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "aegisops-emulator", "cluster": cluster}],
            "users": [{"name": self._tokens[token], "user": {"token": token}}],
            "contexts": [
                {
                    "name": "aegisops-emulator",
                    "context": {
                        "cluster": "aegisops-emulator",
                        "user": self._tokens[token],
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": "aegisops-emulator",
            "preferences": {},
        }
        path = Path(path)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def incluster_files(self, dirpath: str | Path, *, token: str) -> dict[str, str]:
        """Write `token`, `ca.crt`, `namespace` like a pod's service-account mount; return
        the KUBERNETES_SERVICE_HOST/PORT environment the in-cluster loader reads."""
        if not self.tls or self.ca_path is None:
            raise ValueError("in-cluster config needs tls=True: the client always uses https")
        user = self._tokens.get(token)
        if user is None:
            raise KeyError("unknown token: register it with tokens= or add_token()")
        parts = user.split(":")
        namespace = parts[2] if len(parts) == 4 and parts[1] == "serviceaccount" else "default"
        folder = Path(dirpath)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "token").write_text(token)
        (folder / "namespace").write_text(namespace)
        shutil.copyfile(self.ca_path, folder / "ca.crt")
        return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.port)}

    # ---- direct store access (same rules and RVs as the API) ----

    def create(self, obj: Obj) -> Obj:
        rt = lookup_kind(api_version=obj.get("apiVersion", ""), kind=obj.get("kind", ""))
        if rt is None:
            raise KeyError(f"the emulator does not serve {obj.get('apiVersion')} {obj.get('kind')}")
        namespace = (obj.get("metadata") or {}).get("namespace") or "default"
        new = objects.prepare_new(rt, namespace if rt.namespaced else "", obj)
        objects.validate(rt, new)
        if self.auto_status and rt.kind == "Deployment":
            new = objects.auto_status(new)
        return self.store.create(rt, namespace if rt.namespaced else "", new)

    def get(self, resource: str, namespace: str | None, name: str) -> Obj:
        rt = resolve(resource)
        return self.store.get(rt, (namespace or "") if rt.namespaced else "", name)

    def objects(self, resource: str, namespace: str | None = None) -> list[Obj]:
        items, _ = self.store.select(resolve(resource), namespace)
        return items

    def patch(self, resource: str, namespace: str | None, name: str, merge: Obj) -> Obj:
        """A JSON merge patch applied directly (status included; no subresource rules)."""
        rt = resolve(resource)
        ns = (namespace or "") if rt.namespaced else ""

        def finish(obj: Obj) -> Obj:
            return objects.auto_status(obj) if self.auto_status and rt.kind == "Deployment" else obj

        return self.store.update(rt, ns, name, lambda cur: patch.merge_patch(cur, merge), finish)

    def delete(self, resource: str, namespace: str | None, name: str) -> Obj:
        rt = resolve(resource)
        return self.store.delete(rt, (namespace or "") if rt.namespaced else "", name)

    # ---- request log, faults, RBAC ----

    def requests(
        self,
        *,
        verb: Any = _ANY,
        method: Any = _ANY,
        resource: Any = _ANY,
        subresource: Any = _ANY,
        namespace: Any = _ANY,
        name: Any = _ANY,
        user: Any = _ANY,
        code: Any = _ANY,
        path: str | None = None,
    ) -> list[RequestEntry]:
        """Logged requests matching every filter given (path: a regex searched)."""
        found = self.log.select(
            verb=verb,
            method=method,
            resource=resource,
            subresource=subresource,
            namespace=namespace,
            name=name,
            user=user,
            code=code,
        )
        if path is not None:
            found = [e for e in found if re.search(path, e.path)]
        return found

    def clear_requests(self) -> None:
        self.log.clear()

    def inject(
        self,
        *,
        verb: str | None = None,
        path: str = ".*",
        status: int | None = None,
        times: int | None = 1,
        retry_after: int | None = None,
        latency: float | None = None,
        drop: bool = False,
        user: str | None = None,
    ) -> Fault:
        if status is None and latency is None and not drop:
            raise ValueError("a fault needs status=, latency= or drop=True")
        return self.faults.add(
            Fault(
                verb=verb,
                path=re.compile(path),
                status=status,
                times=times,
                retry_after=retry_after,
                latency=latency,
                drop=drop,
                user=user,
            )
        )

    def clear_faults(self) -> None:
        self.faults.clear()

    def rbac_rules(self) -> list[RuleRef]:
        """Every rule of every Role/ClusterRole known (files + API)."""
        return self.authorizer.rules() if self.authorizer else []

    def rbac_rule_usage(self) -> dict[RuleRef, list[RequestEntry]]:
        """Which rule allowed which logged request (non-admin requests in RBAC mode)."""
        usage: dict[RuleRef, list[RequestEntry]] = {rule: [] for rule in self.rbac_rules()}
        for entry in self.log.select():
            if entry.rule is not None:
                usage.setdefault(entry.rule, []).append(entry)
        return usage

    def _rbac_objects(self) -> list[Obj]:
        found = list(self._rbac_static or [])
        for plural in _RBAC_PLURALS:
            found.extend(self.store.select(resolve(f"{plural}.rbac.authorization.k8s.io"), None)[0])
        return found


__all__ = ["ADMIN_USER", "KubeAPIServer", "errors"]
