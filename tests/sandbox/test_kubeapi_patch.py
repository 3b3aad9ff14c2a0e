"""Patch semantics (pure functions): strategic merge patch driven by the real schemas,
JSON merge patch, and the unknown-field walk used for fieldValidation."""

from __future__ import annotations

from typing import Any

from sandbox.kubeapi.patch import merge_patch, strategic_merge
from sandbox.kubeapi.schema import Node, kind_schema, type_error, unknown_fields


def _deployment_schema() -> Node:
    node = kind_schema(group="apps", version="v1", kind="Deployment")
    assert node is not None
    return node


def _pod(containers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": containers, **extra}}}}


def test_containers_env_ports_and_volumes_merge_by_key() -> None:
    original = _pod(
        [
            {
                "name": "app",
                "image": "a:1",
                "env": [{"name": "A", "value": "1"}],
                "ports": [{"containerPort": 80, "name": "http"}],
            },
            {"name": "sidecar", "image": "s:1"},
        ],
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    patch = _pod(
        [
            {
                "name": "app",
                "env": [{"name": "B", "value": "2"}],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
            }
        ],
        volumes=[{"name": "cache", "emptyDir": {}}],
    )
    merged = strategic_merge(original, patch, _deployment_schema())
    app, sidecar = merged["spec"]["template"]["spec"]["containers"]
    assert app == {
        "name": "app",
        "image": "a:1",
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}],
    }
    assert sidecar == {"name": "sidecar", "image": "s:1"}
    assert merged["spec"]["template"]["spec"]["volumes"] == [
        {"name": "data", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
    ]


def test_directives_delete_replace_order_retain_and_primitive_lists() -> None:
    original = {
        "metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
        "spec": {
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "args": ["--x", "--y"],
                        }
                    ]
                }
            },
        },
    }
    patch = {
        "metadata": {
            "finalizers": ["c"],
            "$deleteFromPrimitiveList/finalizers": ["a"],
            "labels": {"$patch": "replace", "z": "3"},
        },
        "spec": {
            "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "$setElementOrder/env": [{"name": "C"}, {"name": "B"}],
                            "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "A"}],
                            "args": ["--z"],
                        }
                    ]
                }
            },
        },
    }
    merged = strategic_merge(original, patch, _deployment_schema())
    assert merged["metadata"] == {"finalizers": ["b", "c"], "labels": {"z": "3"}}
    assert merged["spec"]["strategy"] == {"type": "Recreate"}
    (app,) = merged["spec"]["template"]["spec"]["containers"]
    assert app["env"] == [{"name": "C", "value": "3"}, {"name": "B", "value": "2"}]
    assert app["args"] == ["--z"]  # atomic list: replaced


def test_merge_patch_replaces_lists_and_deletes_nulls() -> None:
    original = {"metadata": {"annotations": {"a": "1", "b": "2"}}, "spec": {"ports": [1, 2]}}
    patched = merge_patch(
        original, {"metadata": {"annotations": {"a": None, "c": "3"}}, "spec": {"ports": [3]}}
    )
    assert patched == {"metadata": {"annotations": {"b": "2", "c": "3"}}, "spec": {"ports": [3]}}
    assert original["metadata"]["annotations"] == {"a": "1", "b": "2"}  # input untouched


def test_unknown_fields_are_reported_with_kube_paths() -> None:
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x", "labels": {"any-key": "ok"}, "colour": "blue"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "a",
                            "resources": {"limits": {"cpu": "1"}},
                            "imagePullPolicyy": "x",
                        }
                    ]
                }
            }
        },
    }
    assert unknown_fields(manifest, _deployment_schema()) == [
        "metadata.colour",
        "spec.template.spec.containers[0].imagePullPolicyy",
    ]
    assert kind_schema(group="monitoring.coreos.com", version="v1", kind="ServiceMonitor") is None


def test_type_errors_are_worded_like_gos_json_decoder() -> None:
    node = _deployment_schema()
    ports = _pod([{"name": "a", "ports": [{"containerPort": "80"}]}])
    assert type_error(ports, node, struct="Deployment") == (
        "json: cannot unmarshal string into Go struct field"
        " ContainerPort.spec.template.spec.containers.ports.containerPort of type int32"
    )
    assert type_error({"spec": "x"}, node, struct="Deployment") == (
        "json: cannot unmarshal string into Go struct field Deployment.spec"
        " of type v1.DeploymentSpec"
    )
    quantities_and_int_or_string = _pod(
        [{"name": "a", "resources": {"limits": {"cpu": 1, "memory": "64Mi"}}}],
    )
    quantities_and_int_or_string["spec"]["strategy"] = {"rollingUpdate": {"maxSurge": "25%"}}
    assert type_error(quantities_and_int_or_string, node, struct="Deployment") is None
