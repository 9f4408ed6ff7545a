"""Domain errors with their HTTP status; one handler turns them into the error envelope."""

from __future__ import annotations

from typing import Any


class LoanDefaultError(Exception):
    """Base error: `code` is the machine-readable `error` field of the envelope."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class ModelNotReady(LoanDefaultError):
    status_code = 503
    code = "model_not_ready"


class InvalidInput(LoanDefaultError):
    status_code = 422
    code = "validation_error"


class NotFound(LoanDefaultError):
    status_code = 404
    code = "not_found"


class ServiceUnavailable(LoanDefaultError):
    """A dependency (broker, result store) is down; the request can be retried later."""

    status_code = 503
    code = "service_unavailable"
