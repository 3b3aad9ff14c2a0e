"""`python -m sandbox.kubeapi`: run the emulator until SIGTERM/SIGINT (exit 0)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from sandbox.kubeapi.rbac import RBACFileError
from sandbox.kubeapi.server import KubeAPIServer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.kubeapi",
        description=(
            "Kubernetes API emulator for the AegisOps sandbox. Serves on 127.0.0.1 until"
            " SIGTERM/SIGINT and writes a kubeconfig that kubectl uses as is."
        ),
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--kubeconfig", type=Path, required=True, help="kubeconfig to write")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with an own CA")
    parser.add_argument(
        "--rbac",
        type=Path,
        action="append",
        metavar="FILE",
        help="RBAC mode: load Roles/ClusterRoles/bindings from FILE (repeatable)",
    )
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN=USER",
        help="accept bearer TOKEN as USER, e.g. t1=system:serviceaccount:aegisops:aegisops-engine",
    )
    parser.add_argument(
        "--auto-status",
        action="store_true",
        help="Deployment status (replicas, readyReplicas) follows spec.replicas at once",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    tokens = {}
    for pair in args.token:
        token, sep, user = pair.partition("=")
        if not sep or not token or not user:
            print(f"error: --token expects TOKEN=USER, got {pair!r}", file=sys.stderr)
            return 2
        tokens[token] = user
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Handlers first: a SIGTERM while starting must still reach the cleanup below.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server = KubeAPIServer(
            tls=args.tls,
            tokens=tokens,
            rbac_files=args.rbac,
            auto_status=args.auto_status,
            port=args.port,
        )
        server.start()
    except RBACFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"error: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    try:
        try:
            server.write_kubeconfig(args.kubeconfig)
        except OSError as exc:
            print(
                f"error: cannot write the kubeconfig {args.kubeconfig}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 2
        print(f"serving {server.url} (kubeconfig: {args.kubeconfig})", flush=True)
        stop.wait()
    finally:
        server.stop()
    print("stopped", flush=True)
    return 0
