"""Kubernetes API emulator for tests and the demo: `from sandbox.kubeapi import KubeAPIServer`.

See sandbox/README-kubeapi.md for what it serves and what it does not."""

from sandbox.kubeapi.errors import ApiError
from sandbox.kubeapi.faults import Fault, RequestEntry
from sandbox.kubeapi.rbac import RBACFileError, RuleRef
from sandbox.kubeapi.server import ADMIN_USER, KubeAPIServer

__all__ = [
    "ADMIN_USER",
    "ApiError",
    "Fault",
    "KubeAPIServer",
    "RBACFileError",
    "RequestEntry",
    "RuleRef",
]
