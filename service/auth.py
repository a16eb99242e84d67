"""Bearer keys: ADMIN_API_KEY for mutating routes, READ_API_KEY (optional) for the rest.
Compared in constant time; 401 without a key, 403 with a wrong one."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from service.errors import ProblemError

bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <key>")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


# The checks below are `async def`: cheap, and FastAPI would otherwise run them in a thread.
def _matches(given: str, key: SecretStr | None) -> bool:
    return key is not None and hmac.compare_digest(given.encode(), key.get_secret_value().encode())


def _check(credentials: HTTPAuthorizationCredentials | None,
           accepted: list[SecretStr | None]) -> None:
    if credentials is None or not credentials.credentials:
        raise ProblemError(401, "Unauthorized", "send Authorization: Bearer <key>",
                           headers={"WWW-Authenticate": "Bearer"})
    if not any(_matches(credentials.credentials, key) for key in accepted):
        raise ProblemError(403, "Forbidden", "this key may not use this route")


async def require_admin(request: Request, credentials: Credentials) -> None:
    settings = request.app.state.settings
    if settings.admin_api_key is None and not settings.production:
        return  # development without a key: open, and the log said so at start
    _check(credentials, [settings.admin_api_key])


async def require_read(request: Request, credentials: Credentials) -> None:
    settings = request.app.state.settings
    if settings.read_api_key is None:
        return
    _check(credentials, [settings.read_api_key, settings.admin_api_key])


Admin = Depends(require_admin)
Reader = Depends(require_read)
