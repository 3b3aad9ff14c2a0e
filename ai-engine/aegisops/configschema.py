"""The config schema machinery: typed fields, range checks, unknown-key hints, secrets.

`aegisops.config` declares the schema with these; nothing here knows the keys. A field is
a scalar, or (`kind=tuple`) a list of non-empty strings (comma-separated in the environment).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import promql_parser


class ConfigError(ValueError):
    """The config is invalid. `key` is the offending key path (e.g. `targets[0].max_replicas`)."""

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


@dataclass(frozen=True)
class Field:
    """One scalar key: its type, default and range."""

    kind: type
    default: Any
    minimum: float | None = None
    above: bool = False  # minimum is exclusive
    maximum: float | None = None
    below: bool = False  # maximum is exclusive
    choices: tuple[str, ...] = ()
    nullable: bool = False
    promql: bool = False
    non_empty: bool = True


class Secret:
    """A string that never prints: str, repr and format all give `***`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "***"

    def __repr__(self) -> str:
        return "Secret('***')"

    def __format__(self, spec: str) -> str:
        return format("***", spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def mask_url(url: str) -> str:
    """`url` with any `user:password@` shown as `***@` (for logs and error messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def positive(default: float) -> Field:
    return Field(float, default, minimum=0, above=True)


def count(default: int, *, minimum: int = 1) -> Field:
    return Field(int, default, minimum=minimum)


Schema = Mapping[str, "Field | Schema"]


KIND_NAMES = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    tuple: "a list of strings",
}


def from_env(text: str, spec: Field, *, key: str, env_name: str) -> Any:
    value = text.strip()
    if spec.nullable and value.lower() in ("", "null", "none"):
        return None
    try:
        if spec.kind is bool:
            return {
                "true": True,
                "1": True,
                "yes": True,
                "on": True,
                "false": False,
                "0": False,
                "no": False,
                "off": False,
            }[value.lower()]
        if spec.kind is int:
            return int(value)
        if spec.kind is float:
            return float(value)
        if spec.kind is tuple:
            return tuple(part.strip() for part in value.split(",") if part.strip())
    except (KeyError, ValueError):
        raise ConfigError(
            f"expected {KIND_NAMES[spec.kind]} in {env_name}, got {text!r}", key=key
        ) from None
    return value


def schema_env_keys(
    schema: Schema, env_prefix: str, path: tuple[str, ...] = ()
) -> dict[str, tuple[str, ...]]:
    """Environment variable name -> key path, for every scalar key of `schema`."""
    keys: dict[str, tuple[str, ...]] = {}
    for name, spec in schema.items():
        here = (*path, name)
        if isinstance(spec, Field):
            keys[env_prefix + "_".join(here).upper()] = here
        else:
            keys.update(schema_env_keys(spec, env_prefix, here))
    return keys


def apply_env(
    raw: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    schema: Schema,
    prefix: str,
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """A copy of `raw` with every `<prefix>...` variable of `env` applied (typed)."""
    keys = schema_env_keys(schema, prefix)
    merged = _copy_sections(raw)
    for name in sorted(env):
        if not name.startswith(prefix) or name in skip:
            continue
        path = keys.get(name)
        if path is None:
            raise ConfigError(f"unknown environment override{suggest(name, keys)}", key=name)
        spec: Any = schema
        for part in path:
            spec = spec[part]
        node = merged
        for part in path[:-1]:
            child = node.get(part)
            node[part] = child = dict(child) if isinstance(child, dict) else {}
            node = child
        node[path[-1]] = from_env(env[name], spec, key=".".join(path), env_name=name)
    return merged


def _copy_sections(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy_sections(v) if isinstance(v, dict) else v for k, v in raw.items()}


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def check_section(
    raw: Any, schema: Schema, key: str, *, extra: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Validate one mapping against `schema` (defaults filled in); `extra` keys are skipped."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping, got {describe(raw)}", key=key)
    allowed = set(schema) | extra
    for name in raw:
        if name not in allowed:
            raise ConfigError(
                f"unknown key{suggest(str(name), allowed)}", key=_join(key, str(name))
            )
    values: dict[str, Any] = {}
    for name, spec in schema.items():
        path = _join(key, name)
        if isinstance(spec, Field):
            values[name] = check_scalar(raw.get(name, spec.default), spec, key=path)
        else:
            values[name] = check_section(raw.get(name), spec, path)
    return values


def check_scalar(value: Any, spec: Field, *, key: str) -> Any:
    if value is None:
        if spec.nullable:
            return None
        required = spec.default is None
        raise ConfigError("is required" if required else "must not be null", key=key)
    value = _typed(value, spec, key=key)
    if spec.choices and value not in spec.choices:
        options = ", ".join(repr(c) for c in spec.choices)
        raise ConfigError(f"expected one of {options}, got {value!r}", key=key)
    if spec.kind in (int, float):
        _check_range(value, spec, key=key)
    if spec.promql:
        try:
            promql_parser.parse(value)
        except ValueError as exc:
            raise ConfigError(f"unparsable PromQL ({exc}): {value!r}", key=key) from None
    return value


def _typed(value: Any, spec: Field, *, key: str) -> Any:
    expected = f"expected {KIND_NAMES[spec.kind]}, got {describe(value)}"
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(expected, key=key)
    elif spec.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(expected, key=key)
    elif spec.kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(expected, key=key)
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"expected a finite number, got {value}", key=key)
    elif spec.kind is tuple:
        if not isinstance(value, list | tuple) or not all(
            isinstance(item, str) and item.strip() for item in value
        ):
            expected = f"expected a list of non-empty strings, got {describe(value)}"
            raise ConfigError(expected, key=key)
        value = tuple(item.strip() for item in value)
    elif spec.kind is str:
        if not isinstance(value, str):
            raise ConfigError(expected, key=key)
        if spec.non_empty and not value.strip():
            raise ConfigError("must not be empty", key=key)
    return value


def _check_range(value: float, spec: Field, *, key: str) -> None:
    shown = _number(value)
    if spec.minimum is not None:
        low = _number(spec.minimum)
        if spec.above and value <= spec.minimum:
            raise ConfigError(f"must be > {low}, got {shown}", key=key)
        if value < spec.minimum:
            raise ConfigError(f"must be >= {low}, got {shown}", key=key)
    if spec.maximum is not None:
        high = _number(spec.maximum)
        if spec.below and value >= spec.maximum:
            raise ConfigError(f"must be < {high}, got {shown}", key=key)
        if value > spec.maximum:
            raise ConfigError(f"must be <= {high}, got {shown}", key=key)


def suggest(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return repr(value)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_NAME = rf"({_DNS_LABEL}(\.{_DNS_LABEL})*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?"
_LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"
_REQUIREMENT = re.compile(
    rf"^\s*(!\s*{_LABEL_NAME}|{_LABEL_NAME}\s*((==?|!=)\s*{_LABEL_VALUE}"
    rf"|\s(in|notin)\s*\(\s*{_LABEL_VALUE}(\s*,\s*{_LABEL_VALUE})*\s*\))?)\s*$"
)


def check_label_selector(text: str, *, key: str) -> str:
    """`text` if it is a Kubernetes label selector (`a=b,c!=d,e in (f,g),!h`), else ConfigError."""
    requirements = re.split(r",(?![^()]*\))", text)
    for requirement in requirements:
        if not _REQUIREMENT.match(requirement):
            raise ConfigError(
                f"not a label selector (e.g. 'aegisops.dev/enabled=true'): "
                f"{requirement.strip()!r} in {text!r}",
                key=key,
            )
    return text
