"""What the shipping tests share: the repository's paths and its manifests, parsed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "kubernetes"
BIN = REPO / ".venv" / "bin"
NAMESPACE = "aegisops"
ENGINE = "aegisops-engine"
APP = "aegisops-app"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Doc:
    """One YAML document of one manifest file."""

    file: str
    index: int
    obj: Obj

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        return str(self.obj.get("metadata", {}).get("name", ""))

    @property
    def id(self) -> str:
        return f"{self.file}#{self.index}:{self.kind}/{self.name}"


def manifest_files() -> list[Path]:
    """The files `kubectl apply -f kubernetes/` reads, in the order it applies them."""
    return sorted(p for p in MANIFESTS.iterdir() if p.suffix in (".yaml", ".yml", ".json"))


@cache
def _load_all() -> tuple[Doc, ...]:
    docs = []
    for path in manifest_files():
        for index, obj in enumerate(yaml.safe_load_all(path.read_text())):
            if obj is not None:
                docs.append(Doc(file=path.name, index=index, obj=obj))
    return tuple(docs)


def docs() -> list[Doc]:
    return list(_load_all())


def find(kind: str, name: str) -> Obj:
    """The one object of `kind` named `name` across kubernetes/."""
    found = [d.obj for d in _load_all() if d.kind == kind and d.name == name]
    assert len(found) == 1, f"expected one {kind}/{name} in kubernetes/, found {len(found)}"
    return found[0]


def of_kind(kind: str) -> list[Obj]:
    return [d.obj for d in _load_all() if d.kind == kind]


def pod_specs() -> Iterator[tuple[str, Obj]]:
    """(kind/name, pod spec) for every workload that runs pods."""
    for doc in _load_all():
        if doc.kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield f"{doc.kind}/{doc.name}", doc.obj["spec"]["template"]["spec"]


def engine_config_text() -> str:
    return str(find("ConfigMap", "aegisops-config")["data"]["config.yaml"])


def engine_container() -> Obj:
    spec = find("Deployment", ENGINE)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return dict(container)
