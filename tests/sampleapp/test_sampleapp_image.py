"""The sample app's image recipe: hadolint-clean, pinned base, dependencies from the
hashed lock generated from sample-app/pyproject.toml, non-root, no build steps in the
final stage."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

APP = Path(__file__).resolve().parents[2] / "sample-app"
DOCKERFILE = APP / "Dockerfile"
LOCK = APP / "requirements.lock"
HADOLINT = Path(sys.executable).with_name("hadolint")


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from the pip-compile lock."""
    pins: dict[str, tuple[str, list[str]]] = {}
    text = LOCK.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)\s*(.*)$", line)
        if match:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", match[3])
            pins[match[1].lower().replace("_", "-")] = (match[2], hashes)
    return pins


def stages() -> list[list[str]]:
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    result: list[list[str]] = []
    for line in lines:
        if line.startswith("FROM "):
            result.append([])
        result[-1].append(line)
    return result


def test_hadolint_passes_without_warnings() -> None:
    proc = subprocess.run(
        [str(HADOLINT), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_lock_pins_every_declared_dependency_with_hashes() -> None:
    project = tomllib.loads((APP / "pyproject.toml").read_text())
    declared = [
        Requirement(r)
        for r in [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    ]
    pins = locked()
    assert set(pins) == {r.name.lower().replace("_", "-") for r in declared}
    for req in declared:
        version, hashes = pins[req.name.lower().replace("_", "-")]
        assert req.specifier.contains(version), (req, version)
        assert hashes, f"{req.name} has no --hash in the lock"


def test_dockerfile_installs_the_lock_on_a_pinned_base_as_non_root() -> None:
    build, final = stages()
    digest = re.compile(r"^FROM python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}( AS build)?$")
    assert digest.match(build[0]) and digest.match(final[0])
    assert build[0].removesuffix(" AS build") == final[0]  # one base for both stages
    assert "COPY requirements.lock ./" in build
    assert any(
        "pip install --require-hashes --no-deps --only-binary=:all: -r requirements.lock" in line
        for line in build
    )
    assert any("pip install --no-deps --no-build-isolation ." in line for line in build)
    assert not any(line.startswith("RUN ") for line in final)  # nothing built in the final stage
    assert "COPY --from=build /opt/venv /opt/venv" in final
    user = next(line for line in final if line.startswith("USER "))
    uid, gid = user.removeprefix("USER ").split(":")
    assert int(uid) >= 10000 and int(gid) >= 10000
    assert "EXPOSE 8080" in final
    assert final[-1] == 'ENTRYPOINT ["aegisops-sample-app"]'
    scripts = tomllib.loads((APP / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {
        "aegisops-sample-app": "sampleapp.server:main",
        "aegisops-loadgen": "sampleapp.loadgen:main",
    }
