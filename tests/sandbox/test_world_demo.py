"""`make demo`'s pieces that can be checked quickly: its engine config and its CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from aegisops.config import load_config
from sandbox.demo import QUICK, Plan, engine_config
from sandbox.world import World

ROOT = Path(__file__).resolve().parents[2]


def test_demo_config_is_valid_for_the_engine(world: World, tmp_path: Path) -> None:
    path = tmp_path / "aegisops.yaml"
    path.write_text(yaml.safe_dump(engine_config(world=world, plan=Plan(), metrics_port=9999)))
    config = load_config(path, env={})
    assert config.prometheus.url == world.prometheus_url
    assert config.kubernetes.mode == "kubeconfig"
    assert config.kubernetes.kubeconfig == str(world.engine_kubeconfig)
    assert config.poll_interval_seconds == 1
    assert config.detector.baseline_samples == 60
    assert config.policy.cooldown_seconds == 60
    assert [
        (t.namespace, t.deployment, t.min_replicas, t.max_replicas) for t in config.targets
    ] == [("aegisops", "aegisops-app", 1, 4)]
    assert "[5s]" in config.prometheus.queries.rps
    assert QUICK.learn_seconds + QUICK.surge_seconds < Plan().learn_seconds + Plan().surge_seconds


def test_demo_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sandbox.demo", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python -m sandbox.demo [-h] [--quick] [--verbose]")
    assert "SLACK_WEBHOOK_URL" in done.stdout
