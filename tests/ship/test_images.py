"""Both images: hadolint-clean, multi-stage, pinned, non-root, and built from exactly one
dependency list: pyproject.toml -> requirements.lock (pinned, hashed) -> the Dockerfile.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from ship_helpers import BIN, REPO, engine_container, pod_specs


@dataclass(frozen=True)
class Image:
    folder: str
    entrypoint: list[str]

    @property
    def dockerfile(self) -> Path:
        return REPO / self.folder / "Dockerfile"

    @property
    def lock(self) -> Path:
        return REPO / self.folder / "requirements.lock"

    @property
    def pyproject(self) -> dict[str, object]:
        return tomllib.loads((REPO / self.folder / "pyproject.toml").read_text())


IMAGES = [
    Image(folder="ai-engine", entrypoint=["aegisops"]),
    Image(folder="sample-app", entrypoint=["aegisops-sample-app"]),
]
IDS = [i.folder for i in IMAGES]


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def parse_lock(text: str) -> dict[str, tuple[str, int]]:
    """{canonical name: (pinned version, number of hashes)} from a pip-compile lock."""
    pins: dict[str, tuple[str, int]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            assert current is not None, f"hash before any requirement: {raw!r}"
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
            continue
        requirement = line.rstrip("\\").strip()
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)(\s*;.*)?", requirement)
        assert match, f"not an exact pin: {raw!r}"
        current = str(canonicalize_name(match[1]))
        pins[current] = (match[2], 0)
    return pins


def lock_problems(*, requirements: list[str], lock_text: str) -> list[str]:
    """Why the lock does not satisfy `requirements` (empty when it does)."""
    pins = parse_lock(lock_text)
    problems = [f"{name}=={v} has no --hash" for name, (v, n) in pins.items() if n == 0]
    for text in requirements:
        requirement = Requirement(text)
        name = str(canonicalize_name(requirement.name))
        if name not in pins:
            problems.append(f"{text}: not in the lock")
        elif not requirement.specifier.contains(Version(pins[name][0]), prereleases=True):
            problems.append(f"{text}: the lock pins {pins[name][0]}")
    return problems


def declared(image: Image) -> list[str]:
    project = image.pyproject["project"]
    build = image.pyproject["build-system"]
    assert isinstance(project, dict) and isinstance(build, dict)
    return [*project["dependencies"], *build["requires"]]


# -- lint --------------------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_dockerfile_passes_hadolint(image: Image) -> None:
    assert image.dockerfile.exists(), f"{image.dockerfile} is missing"
    done = subprocess.run(
        [str(BIN / "hadolint"), "--format", "json", str(image.dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(done.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert done.returncode == 0


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    done = subprocess.run(
        [str(BIN / "hadolint"), "--format", "json", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    codes = {f["code"] for f in json.loads(done.stdout)}
    assert {"DL3007", "DL3013"} <= codes and done.returncode != 0


# -- shape -------------------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_multi_stage_pinned_base_non_root_and_no_build_tools_in_the_final_stage(
    image: Image,
) -> None:
    steps = instructions(image.dockerfile)
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    bases = [a.split()[0] for k, a in steps if k == "FROM"]
    assert len(bases) >= 2, "multi-stage: a builder and a slim final stage"
    for base in bases:
        ref = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], base)
        assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64}", ref), ref
    final = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    run_text = " ".join(a for k, a in final if k == "RUN")
    for tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in run_text, f"{tool} in the final stage"
    assert any(k == "COPY" and a.startswith("--from=") for k, a in final)
    (user,) = [a for k, a in final if k == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or gid.isdigit())
    # The manifests run the same numeric user, so runAsNonRoot can verify it.
    run_as = {spec["securityContext"]["runAsUser"] for _, spec in pod_specs()}
    assert run_as == {int(uid)}
    (entrypoint,) = [json.loads(a) for k, a in final if k == "ENTRYPOINT"]
    assert entrypoint == image.entrypoint


def test_engine_image_default_command_is_what_the_deployment_runs() -> None:
    steps = instructions(REPO / "ai-engine" / "Dockerfile")
    (cmd,) = [json.loads(a) for k, a in steps if k == "CMD"]
    assert cmd == engine_container()["args"] == ["run", "--config", "/etc/aegisops/config.yaml"]


# -- one source of truth for dependencies ------------------------------------------------


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_lock_pins_and_hashes_every_declared_dependency_within_range(image: Image) -> None:
    assert image.lock.exists(), f"{image.lock} is missing: run `make lock`"
    assert lock_problems(requirements=declared(image), lock_text=image.lock.read_text()) == []


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_dockerfile_installs_exactly_the_lock_then_the_package_without_deps(image: Image) -> None:
    steps = instructions(image.dockerfile)
    copies = [a for k, a in steps if k == "COPY"]
    assert any(a.split()[0] == "requirements.lock" for a in copies)
    installs = [
        command.strip()
        for k, a in steps
        if k == "RUN"
        for command in a.split("&&")
        if "pip install" in command
    ]
    from_lock = [c for c in installs if "-r requirements.lock" in c]
    assert len(from_lock) == 1 and "--require-hashes" in from_lock[0], installs
    for command in installs:
        if command not in from_lock:
            # anything else is our own package, never resolving dependencies itself
            assert "--no-deps" in command and command.split()[-1] == ".", command


def test_the_lock_check_catches_a_missing_an_unpinned_or_an_out_of_range_dependency() -> None:
    lock = "numpy==1.26.4 \\\n    --hash=sha256:aa\nrequests==2.31.0\n"
    problems = lock_problems(
        requirements=["numpy>=2", "requests>=2.31", "pyyaml>=6"], lock_text=lock
    )
    assert problems == [
        "requests==2.31.0 has no --hash",
        "numpy>=2: the lock pins 1.26.4",
        "pyyaml>=6: not in the lock",
    ]
    with pytest.raises(AssertionError, match="not an exact pin"):
        parse_lock("numpy>=1.26\n")
