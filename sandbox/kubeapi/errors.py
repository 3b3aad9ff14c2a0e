"""`kind: Status` error bodies shaped like kube-apiserver's (code, reason, message, details)."""

from __future__ import annotations

from typing import Any

from sandbox.kubeapi.resources import ResourceType

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


class ApiError(Exception):
    """An error the emulator answers with: HTTP status + a Status body."""

    def __init__(
        self,
        *,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason if reason is not None else _REASONS.get(code, "")
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(rt: ResourceType | None, name: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if rt is not None:
        if rt.group:
            details["group"] = rt.group
        details["kind"] = rt.plural
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        code=404, message=f'{rt.group_resource} "{name}" not found', details=_details(rt, name)
    )


def namespace_not_found(namespace: str) -> ApiError:
    return ApiError(
        code=404,
        message=f'namespaces "{namespace}" not found',
        details={"name": namespace, "kind": "namespaces"},
    )


def resource_not_found() -> ApiError:
    return ApiError(
        code=404, message="the server could not find the requested resource", details={}
    )


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        code=409,
        reason="AlreadyExists",
        message=f'{rt.group_resource} "{name}" already exists',
        details=_details(rt, name),
    )


def conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        code=409,
        message=(
            f'Operation cannot be fulfilled on {rt.group_resource} "{name}": the object has'
            " been modified; please apply your changes to the latest version and try again"
        ),
        details=_details(rt, name),
    )


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """causes: (field, reason e.g. FieldValueInvalid, message)."""
    text = ", ".join(f"{field}: {msg}" for field, _, msg in causes)
    kind = rt.kind if not rt.group else f"{rt.kind}.{rt.group}"
    details = _details(rt, name)
    details["kind"] = rt.kind
    details["causes"] = [
        {"reason": reason, "message": msg, "field": field} for field, reason, msg in causes
    ]
    return ApiError(code=422, message=f'{kind} "{name}" is invalid: {text}', details=details)


def bad_request(message: str) -> ApiError:
    return ApiError(code=400, message=message)


def forbidden(
    *,
    rt: ResourceType | None,
    resource: str,
    name: str | None,
    user: str,
    verb: str,
    namespace: str | None,
) -> ApiError:
    group = rt.group if rt else ""
    who = rt.group_resource if rt else resource
    subject = f'{who} "{name}"' if name else who
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = (
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}"'
        f' in API group "{group}" {scope}'
    )
    return ApiError(code=403, message=message, details=_details(rt, name))


def unauthorized() -> ApiError:
    return ApiError(code=401, message="Unauthorized")


def unsupported_media(accepted: tuple[str, ...]) -> ApiError:
    return ApiError(
        code=415,
        message=(
            "the body of the request was in an unknown format - accepted media types include: "
            + ", ".join(accepted)
        ),
    )


def name_mismatch(in_body: object, on_url: str) -> ApiError:
    return bad_request(
        f"the name of the object ({in_body}) does not match the name on the URL ({on_url})"
    )
