"""Errors that become HTTP answers, in the one JSON shape of docs/api.md."""

from __future__ import annotations

from typing import Any

from shoal._errors import ShoalError


class ApiError(ShoalError):
    """A ShoalError with the HTTP status it is answered with.

    Parameters
    ----------
    status
        400 malformed, 401 auth, 403 not yours, 404 unknown, 409 conflict, 413 too large,
        422 schema mismatch, 429 too many failed authentications.
    message, code, hint
        As for :class:`ShoalError`.
    headers
        Response headers the answer carries (``Retry-After`` of a 429).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str = "api",
        hint: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, hint=hint)
        self.status = status
        self.headers = headers

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.status, self.message, self.code, self.hint, self.headers))


def _rebuild(
    status: int, message: str, code: str, hint: str | None, headers: dict[str, str] | None = None
) -> ApiError:
    return ApiError(status, message, code=code, hint=hint, headers=headers)


def error_body(code: str, message: str, hint: str | None = None) -> dict[str, Any]:
    """``{"error": {"code", "message", "hint"}}``."""
    return {"error": {"code": code, "message": message, "hint": hint}}


def not_found(what: str, ident: str, hint: str | None = None) -> ApiError:
    """404 for an unknown id."""
    return ApiError(404, f"unknown {what} {ident!r}", code=f"{what}.unknown", hint=hint)


def forbidden(message: str) -> ApiError:
    """403: the caller may not act on this object."""
    return ApiError(
        403, message, code="auth.forbidden", hint="a node may only act on its own instances"
    )
