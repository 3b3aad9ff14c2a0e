"""Credentials: in-cluster service account first (mode auto), a kubeconfig as the fallback.
Always a fresh `Configuration`: the library's global default is never touched."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kubernetes import client
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import InClusterConfigLoader
from kubernetes.config.kube_config import load_kube_config

from aegisops.kube.errors import KubeAuthError

if TYPE_CHECKING:
    from aegisops.config import KubernetesConfig


@dataclass(frozen=True)
class Auth:
    """How the client authenticated: `incluster` or `kubeconfig`, and against which host."""

    mode: str
    host: str
    source: str


def build_configuration(
    *, config: KubernetesConfig, environ: Mapping[str, str]
) -> tuple[client.Configuration, Auth]:
    """A fresh client Configuration: in-cluster first (mode auto), kubeconfig as the fallback."""
    errors = []
    if config.mode in ("auto", "incluster"):
        try:
            return _incluster(config=config, environ=environ)
        except ConfigException as err:
            if config.mode == "incluster":
                raise KubeAuthError(f"in-cluster credentials unusable: {err}") from None
            errors.append(f"in-cluster: {err}")
    try:
        return _kubeconfig(config=config, environ=environ)
    except (ConfigException, OSError) as err:
        errors.append(f"kubeconfig: {err}")
    raise KubeAuthError("no Kubernetes credentials (" + "; ".join(errors) + ")")


def _incluster(
    *, config: KubernetesConfig, environ: Mapping[str, str]
) -> tuple[client.Configuration, Auth]:
    sa_dir = Path(config.serviceaccount_dir)
    configuration = client.Configuration()
    loader = InClusterConfigLoader(
        token_filename=str(sa_dir / "token"),
        cert_filename=str(sa_dir / "ca.crt"),
        environ=dict(environ),
    )
    loader.load_and_set(configuration)
    return configuration, Auth(mode="incluster", host=configuration.host, source=str(sa_dir))


def _kubeconfig(
    *, config: KubernetesConfig, environ: Mapping[str, str]
) -> tuple[client.Configuration, Auth]:
    path = config.kubeconfig or environ.get("KUBECONFIG") or str(Path("~/.kube/config"))
    path = os.path.expanduser(path)
    configuration = client.Configuration()
    load_kube_config(config_file=path, client_configuration=configuration, persist_config=False)
    return configuration, Auth(mode="kubeconfig", host=configuration.host, source=path)
