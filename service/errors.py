"""Every error is application/problem+json (RFC 9457), mapped in one place. A 500 says nothing
about internals; the traceback goes to the log only."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import answered_by
from state.jobs import JobNotFound
from trainer.errors import BundleError, ConfigError, DatasetError
from trainer.images import InvalidImage

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(default="about:blank", description="A URI naming the problem kind.")
    title: str = Field(description="Short summary of the problem kind.")
    status: int = Field(description="The HTTP status code.")
    detail: str | None = Field(default=None, description="What went wrong with this request.")
    instance: str | None = Field(default=None, description="The request path.")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Field-level validation errors (at most 20).")
    error_count: int | None = Field(
        default=None, description="How many validation errors there were in all.")


class ProblemError(StarletteHTTPException):
    """An HTTP error with problem details. An HTTPException, so that FastAPI passes it through
    unchanged even when it is raised while the request body is being read."""

    def __init__(self, status: int, title: str, detail: str | None = None,
                 errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None, error_count: int | None = None) -> None:
        super().__init__(status, detail or title, headers)
        self.status, self.title, self.problem_detail = status, title, detail
        self.errors = errors
        self.error_count = error_count


def not_found(detail: str) -> ProblemError:
    return ProblemError(404, "Not Found", detail)


def conflict(detail: str) -> ProblemError:
    return ProblemError(409, "Conflict", detail)


def invalid(detail: str, errors: list[dict[str, Any]] | None = None,
            error_count: int | None = None) -> ProblemError:
    return ProblemError(422, "Unprocessable Content", detail, errors,
                        error_count=error_count if errors else None)


def invalid_archive(detail: str) -> ProblemError:
    return ProblemError(422, "Invalid Archive", detail)


def insufficient_storage(detail: str) -> ProblemError:
    return ProblemError(507, "Insufficient Storage", detail)


def too_large(detail: str) -> ProblemError:
    return ProblemError(413, "Content Too Large", detail)


def unsupported(detail: str) -> ProblemError:
    return ProblemError(415, "Unsupported Media Type", detail)


def not_ready(detail: str, retry_after_s: int = 5) -> ProblemError:
    return ProblemError(503, "Service Unavailable", detail,
                        headers={"Retry-After": str(retry_after_s)})


def problem_response(request: Request, status: int, title: str, detail: str | None = None,
                     errors: list[dict[str, Any]] | None = None,
                     headers: Mapping[str, str] | None = None,
                     error_count: int | None = None) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail, instance=request.url.path,
                   errors=errors, error_count=error_count).model_dump(exclude_none=True)
    # After a route chose its model version, its errors name that version as its answers do.
    return JSONResponse(body, status_code=status, media_type=PROBLEM,
                        headers=answered_by.headers() | dict(headers or {}))


_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
           415: "Unsupported Media Type", 422: "Unprocessable Content",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
           507: "Insufficient Storage"}
MAX_ERRORS = 20


def _clean_validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for e in exc.errors()[:MAX_ERRORS]:
        out.append({"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                    "type": str(e.get("type", ""))})
    return out


# Seconds a client waits before trying again when the job store cannot be reached.
STORE_RETRY_AFTER_S = 5


def install(app: FastAPI, unavailable: tuple[type[Exception], ...] = ()) -> None:
    """`unavailable`: errors that mean the job store cannot be reached just now (503)."""
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(request, exc.status, exc.title, exc.problem_detail,
                                exc.errors, exc.headers, exc.error_count)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean_validation_errors(exc)
        first: dict[str, Any] = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p not in ("body", "query", "path"))
        detail = f"{where}: {first['msg']}" if where else first["msg"]
        return problem_response(request, 422, "Unprocessable Content", detail, errors,
                                error_count=len(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = _TITLES.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette names only the first route that matched the path.
            from service.routing import allowed_methods

            headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope["path"]))
        return problem_response(request, exc.status_code, title, detail, headers=headers)

    @app.exception_handler(ConfigError)
    async def _config(request: Request, exc: ConfigError) -> JSONResponse:
        return problem_response(request, 422, "Invalid Training Config", str(exc),
                                [{"loc": ["config", exc.key], "msg": exc.message,
                                  "type": "config"}], error_count=1)

    @app.exception_handler(DatasetError)
    async def _dataset(request: Request, exc: DatasetError) -> JSONResponse:
        # The request named a dataset that exists but cannot be used as it is now.
        return problem_response(request, 409, "Unusable Dataset", str(exc))

    @app.exception_handler(InvalidImage)
    async def _image(request: Request, exc: InvalidImage) -> JSONResponse:
        return problem_response(request, 422, "Invalid Image", str(exc))

    @app.exception_handler(JobNotFound)
    async def _job(request: Request, exc: JobNotFound) -> JSONResponse:
        return problem_response(request, 404, "Not Found", f"no job {exc.args[0]!r}")

    @app.exception_handler(BundleError)
    async def _bundle(request: Request, exc: BundleError) -> JSONResponse:
        return problem_response(request, 404, "Not Found", str(exc))

    async def _store_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("job store unavailable on %s %s: %s", request.method, request.url.path,
                    type(exc).__name__)
        return problem_response(request, 503, "Service Unavailable",
                                "the job store cannot be reached just now; try again",
                                headers={"Retry-After": str(STORE_RETRY_AFTER_S)})

    for kind in unavailable:
        app.add_exception_handler(kind, _store_down)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, "Internal Server Error",
                                "an unexpected error occurred; it has been logged")


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM: {}}, "description": title}
    for code, title in _TITLES.items() if code not in (405, 429)
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: PROBLEM_RESPONSES[c] for c in codes}
