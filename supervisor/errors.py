"""The API's errors: one ApiError tree, the worker ErrorCode -> status table, one renderer.

ApiError (status 500)
├── BadRequest         400
├── ModelNotFound      404
├── RequestCancelled   499   the client went away while waiting
├── QueueFull          503
├── LoadFailed         500   a worker could not load its model
└── WorkerCrashed      500   a worker died with requests in flight
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from worker.protocol import ErrorCode


class ApiError(Exception):
    """An error with an HTTP status and the message Ollama's clients show to users."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    status = 400


class ModelNotFound(ApiError):
    status = 404


class RequestCancelled(ApiError):
    status = 499

    def __init__(self, message: str = "request canceled") -> None:
        super().__init__(message)


class QueueFull(ApiError):
    status = 503

    def __init__(self) -> None:
        # Ollama's exact text, two spaces included.
        super().__init__("server busy, please try again.  maximum pending requests exceeded")


class LoadFailed(ApiError):
    status = 500


class WorkerCrashed(ApiError):
    status = 500


STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.CONTEXT_OVERFLOW: 400,
    ErrorCode.OUT_OF_MEMORY: 500,
    ErrorCode.LOAD_FAILED: 500,
    ErrorCode.CANCELLED: 499,
    ErrorCode.INTERNAL: 500,
}


def from_error_code(code: ErrorCode, message: str) -> ApiError:
    """The ApiError a worker's ErrorInfo becomes."""
    if code is ErrorCode.CANCELLED:
        return RequestCancelled()
    return ApiError(message, STATUS_BY_CODE.get(code, 500))


def error_response(exc: ApiError) -> Response:
    """`{"error": "..."}` with the error's status (Ollama's native error shape)."""
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for ApiError."""
    assert isinstance(exc, ApiError)
    return error_response(exc)
