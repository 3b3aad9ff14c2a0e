"""`aegisops run | check | backtest`: build the one Config in main() and wire the edges.

Bad input never gives a traceback: one line naming what is wrong, exit code 2. In the
cluster (a health port configured and no `--once`), an invalid config does not crash-loop
the pod: the engine stays up, /readyz answers 503 with the reason (logged once), and the
file is read again every few seconds until it is fixed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from aegisops import __version__
from aegisops.backtest import BacktestError, run_backtest
from aegisops.checks import check_kubernetes, check_prometheus, line
from aegisops.config import Config, ConfigError, load_config
from aegisops.kube import KubeClient, KubeError
from aegisops.leader import LeaderElector, LeaderParams, resolve_params
from aegisops.logs import setup_logging, utc_timestamp
from aegisops.loop import Engine
from aegisops.notify import SlackNotifier
from aegisops.outbox import Outbox
from aegisops.policy import Limits
from aegisops.prometheus import PrometheusSource
from aegisops.selfmetrics import HealthServer, SelfMetrics, stale_after

log = logging.getLogger("aegisops")
DEFAULT_CONFIG = "/etc/aegisops/config.yaml"
CONFIG_RECHECK_SECONDS = 2.0
SHUTDOWN_FLUSH_SECONDS = 5.0  # at most this long (or one poll interval) to flush Slack on exit
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aegisops",
        description="Watch workloads via Prometheus, detect anomalies, scale, tell Slack.",
    )
    parser.add_argument("--version", action="version", version=f"aegisops {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    config_help = f"config file (default: $AEGISOPS_CONFIG or {DEFAULT_CONFIG})"

    run = commands.add_parser("run", help="run the daemon", description="Run the daemon.")
    run.add_argument("--config", metavar="FILE", help=config_help)
    run.add_argument("--once", action="store_true", help="one pass, then exit (1 on errors)")
    run.add_argument("--dry-run", action="store_true", help="decide and log, change nothing")
    run.add_argument("--log-format", choices=("text", "json"), help="default: log.format")

    check = commands.add_parser(
        "check",
        help="check config, Prometheus, Kubernetes permissions, Slack",
        description="Print a short checklist; exit 0 when everything needed is in place.",
    )
    check.add_argument("--config", metavar="FILE", help=config_help)

    backtest = commands.add_parser(
        "backtest",
        help="replay detector + policy over CSV",
        description="Replay the detector and policy offline over a CSV file or directory.",
    )
    backtest.add_argument("--input", required=True, metavar="CSV|DIR")
    backtest.add_argument("--output", required=True, metavar="CSV|DIR")
    backtest.add_argument(
        "--config",
        metavar="FILE",
        help="detector and policy settings; targets are optional (without them the default "
        "limits: min_replicas 1, max_replicas 5, scale_step 1); only AEGISOPS_DETECTOR_* and "
        "AEGISOPS_POLICY_* overrides apply",
    )
    backtest.add_argument(
        "--target",
        metavar="NS/NAME",
        help="whose limits to use when the config lists several targets (default: the first)",
    )
    backtest.add_argument("--replicas", type=int, default=1, help="starting replicas (1)")
    return parser


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    environ = dict(os.environ if env is None else env)
    try:
        if args.command == "run":
            return cmd_run(args, env=environ)
        if args.command == "check":
            return cmd_check(args, env=environ)
        return cmd_backtest(args, env=environ)
    except KeyboardInterrupt:
        return EXIT_OK


def config_path(args: argparse.Namespace, env: Mapping[str, str]) -> Path:
    return Path(args.config or env.get("AEGISOPS_CONFIG") or DEFAULT_CONFIG)


def fail(message: str, *, code: int = EXIT_USAGE, as_json: bool = False) -> int:
    """One line on stderr (a JSON log record when JSON logs were asked for); the exit code."""
    if as_json:
        record = {"ts": utc_timestamp(time.time()), "level": "ERROR", "logger": "aegisops"}
        print(json.dumps({**record, "msg": message}), file=sys.stderr)
    else:
        print(f"aegisops: {message}", file=sys.stderr)
    return code


# -- run ---------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, *, env: Mapping[str, str]) -> int:
    path = config_path(args, env)
    early = env.get("AEGISOPS_LOG_FORMAT", "text")
    early_format = args.log_format or (early if early in ("text", "json") else "text")
    setup_logging(format=early_format)
    as_json = early_format == "json"
    stop = threading.Event()
    _on_signals(stop)
    try:
        config = load_config(path, env=env)
    except ConfigError as err:
        host, port = fallback_server(path, env) if not args.once else ("", 0)
        if port <= 0:
            return fail(f"invalid config {path}: {err}", as_json=as_json)
        try:
            config_or_none = wait_for_valid_config(
                path, env=env, host=host, port=port, stop=stop, first=err
            )
        except (OSError, OverflowError) as bind_error:
            return fail(f"invalid config {path}: {err} (and {bind_error})", as_json=as_json)
        if config_or_none is None:
            return EXIT_OK
        config = config_or_none
    if args.dry_run:
        config = dataclasses.replace(config, dry_run=True)
    setup_logging(format=args.log_format or config.log.format, level=config.log.level)
    log.info(
        "aegisops %s starting with config %s: %s",
        __version__,
        path,
        json.dumps(config.describe(), sort_keys=True, default=str),
    )
    return serve(config, env=env, once=args.once, stop=stop)


def serve(config: Config, *, env: Mapping[str, str], once: bool, stop: threading.Event) -> int:
    """Wire the edges, then one pass (`--once`) or passes until SIGTERM/SIGINT."""
    metrics = SelfMetrics(stale_after_seconds=stale_after(config.poll_interval_seconds))
    health = HealthServer(port=config.server.port, metrics=metrics, host=config.server.host)
    if config.server.port > 0 and not once:
        try:
            health.start()
        except OSError as err:
            return fail(str(err))
    try:
        kube = KubeClient(config=config.kubernetes, environ=env)
    except KubeError as err:
        health.stop()
        return fail(str(err), code=EXIT_FAILED)
    log.info(
        "kubernetes: %s auth against %s (%s)", kube.auth.mode, kube.auth.host, kube.auth.source
    )
    source = PrometheusSource(config=config.prometheus, targets=[t.key for t in config.targets])
    notifier = SlackNotifier(config=config.slack, webhook=config.slack.webhook)
    outbox = Outbox(notifier=notifier, max_queue=config.slack.max_queue, metrics=metrics)
    params = leader_params(config, env=env)
    elector = LeaderElector(kube=kube, params=params)
    leader = elector if params.enabled else None
    engine = Engine(
        config=config, source=source, kube=kube, notifier=outbox, metrics=metrics, leader=leader
    )
    try:
        metrics.set_ready(True)  # followers are ready too: they take over within a lease
        elector.step()  # the first pass knows whether it leads
        if once:
            now = time.time()
            engine.train_from_history(now=now)
            return EXIT_FAILED if engine.run_pass(now).errors else EXIT_OK
        elector.start()
        engine.run_forever(stop=stop)
        log.info("stopping after %d passes", engine.passes)
        return EXIT_OK
    finally:
        # SIGTERM: the pass is finished; hand the Lease over, flush Slack (bounded), close
        elector.stop(release=True, timeout=config.kubernetes.timeout_seconds)
        outbox.close(timeout=min(SHUTDOWN_FLUSH_SECONDS, config.poll_interval_seconds))
        health.stop()
        source.close()
        kube.close()
        notifier.close()


def leader_params(config: Config, *, env: Mapping[str, str]) -> LeaderParams:
    """`leader_election` with its nulls resolved (namespace, identity) from the pod."""
    return resolve_params(
        **dataclasses.asdict(config.leader_election),
        environ=env,
        namespace_file=Path(config.kubernetes.serviceaccount_dir) / "namespace",
    )


def fallback_server(path: Path, env: Mapping[str, str]) -> tuple[str, int]:
    """(host, port) of the health server to stay up on when the config is invalid; port 0: exit.

    Port: AEGISOPS_SERVER_PORT, else `server.port` if the file still says it (1..65535),
    else the default 8080 only inside a pod (KUBERNETES_SERVICE_HOST set): at a terminal,
    exit with the error. Host: AEGISOPS_SERVER_HOST, else `server.host` if readable, else
    0.0.0.0.
    """
    server: Any = {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        server = data.get("server") if isinstance(data, dict) else {}
    except Exception:  # unreadable or broken: fall through to the defaults
        pass
    server = server if isinstance(server, dict) else {}
    host = env.get("AEGISOPS_SERVER_HOST", "").strip() or server.get("host")
    host = host.strip() if isinstance(host, str) and host.strip() else "0.0.0.0"
    raw = env.get("AEGISOPS_SERVER_PORT")
    if raw is not None:
        port = int(raw) if raw.strip().isdigit() else 0
        return host, port if 0 < port < 65536 else 0
    port = server.get("port")
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        return host, port
    return host, 8080 if env.get("KUBERNETES_SERVICE_HOST") else 0


def wait_for_valid_config(
    path: Path,
    *,
    env: Mapping[str, str],
    host: str = "0.0.0.0",
    port: int,
    stop: threading.Event,
    first: ConfigError,
) -> Config | None:
    """Stay alive and not ready, re-reading `path`, until it is valid (or we are stopped)."""
    metrics = SelfMetrics(stale_after_seconds=stale_after(CONFIG_RECHECK_SECONDS))
    reason = f"invalid config {path}: {first}"
    metrics.set_ready(False, reason)
    with HealthServer(port=port, metrics=metrics, host=host):
        log.error("%s; not ready, re-checking every %gs", reason, CONFIG_RECHECK_SECONDS)
        while not stop.wait(CONFIG_RECHECK_SECONDS):
            metrics.heartbeat(time.time())
            try:
                config = load_config(path, env=env)
            except ConfigError as err:
                now_reason = f"invalid config {path}: {err}"
                if now_reason != reason:
                    reason = now_reason
                    log.error("%s; still not ready", reason)
                    metrics.set_ready(False, reason)
                continue
            log.info("config %s is valid now; starting", path)
            return config
    return None


def _on_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT: finish the current pass, then exit 0."""

    def handler(signum: int, frame: Any) -> None:
        log.info("received %s, finishing the current pass", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


# -- check -------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace, *, env: Mapping[str, str]) -> int:
    path = config_path(args, env)
    setup_logging(format="text", level="warning")
    try:
        config = load_config(path, env=env)
    except ConfigError as err:
        line(False, f"config {path}: {err}")
        return EXIT_FAILED
    line(
        True,
        f"config {path}: {len(config.targets)} target(s), "
        f"poll every {config.poll_interval_seconds:g}s",
    )
    lease = leader_params(config, env=env) if config.leader_election.enabled else None
    results = [check_prometheus(config), check_kubernetes(config, env=env, lease=lease)]
    if config.slack.webhook is None:
        line(None, f"slack: off (${config.slack.webhook_env} not set); alerts go to the log")
    else:
        line(True, f"slack: webhook from ${config.slack.webhook_env}")
    return EXIT_OK if all(results) else EXIT_FAILED


# -- backtest ----------------------------------------------------------------------------


def cmd_backtest(args: argparse.Namespace, *, env: Mapping[str, str]) -> int:
    setup_logging(format="text", level="warning")
    config = None
    if args.config:
        try:
            config = load_config(Path(args.config), env=env, backtest=True)
        except ConfigError as err:
            return fail(f"invalid config {args.config}: {err}")
    targets = config.targets if config is not None else ()
    chosen = [t for t in targets if t.key == args.target] if args.target else list(targets[:1])
    if args.target and not chosen:
        listed = ", ".join(t.key for t in targets) or "none"
        return fail(f"backtest: --target {args.target} is not in the config (targets: {listed})")
    limits = chosen[0].limits if chosen else Limits()
    if len(targets) > 1 and not args.target:
        print(
            f"backtest: the config has {len(targets)} targets; using the limits of "
            f"{chosen[0].key} (--target NS/NAME to choose)",
            file=sys.stderr,
        )
    try:
        summary = run_backtest(
            input_path=args.input,
            output_path=args.output,
            config=config,
            replicas=args.replicas,
            limits=limits,
        )
    except BacktestError as err:
        return fail(f"backtest: {err}")
    print(
        f"backtest: {summary.files} file(s), {summary.rows} rows, {summary.scored} scored, "
        f"{summary.incidents} incidents, {summary.actions} actions -> {args.output}"
    )
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
