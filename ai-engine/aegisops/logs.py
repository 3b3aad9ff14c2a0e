"""Logs people can tail (`text`) or machines can parse (`json`, one object per line).

text: `2026-11-26T10:00:00Z INFO aegisops.loop aegisops/aegisops-app: scale_up 1->2 ...`
      (the workload appears when the record carries `extra={"workload": ...}`)
json: `{"ts": "2026-11-26T10:00:00Z", "level": "INFO", "logger": "aegisops.loop",
       "msg": "...", "workload": "aegisops/aegisops-app", "action": "scale_up", ...}`

HTTP client libraries log request paths at DEBUG, and the Slack webhook's path is its
secret: they are held at WARNING whatever the level asked for.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

FORMATS = ("text", "json")
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
QUIET_LOGGERS = ("urllib3", "requests", "kubernetes")
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def utc_timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the caller passed in `extra=`, in the order given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


class TextFormatter(logging.Formatter):
    """`<ts> <LEVEL> <logger>[ <workload>]: <msg>`, tracebacks indented below."""

    def format(self, record: logging.LogRecord) -> str:
        workload = getattr(record, "workload", None)
        where = f"{record.name} {workload}" if workload else record.name
        line = f"{utc_timestamp(record.created)} {record.levelname} {where}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def on(key: str, **fields: Any) -> dict[str, Any]:
    """`extra=` for a log record about one workload (text shows it, json gets the fields)."""
    return {"workload": key, **fields}


def setup_logging(
    *, format: str = "text", level: str | int = "info", stream: TextIO | None = None
) -> logging.Handler:
    """Install one handler on the root logger (replacing a previous one of ours)."""
    if format not in FORMATS:
        raise ValueError(f"log format: expected one of 'text', 'json', got {format!r}")
    numeric = level if isinstance(level, int) else LEVELS.get(str(level).lower())
    if numeric is None:
        raise ValueError(
            f"log level: expected one of {', '.join(map(repr, LEVELS))}, got {level!r}"
        )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "aegisops", False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    handler.aegisops = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    return handler
