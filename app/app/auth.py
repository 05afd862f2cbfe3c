"""Bearer tokens for writes: JWTs (HS256) signed with SECRET_KEY for this app only.

Claims: `sub` (who), `scope` (space-separated), `iat`, `exp`, and `aud` = APP_NAME, so a
token minted for another app that shares the key is refused. Reads never look at tokens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.config import Settings

WRITE_SCOPE = "products:write"
ALGORITHM = "HS256"
# Seconds of clock difference tolerated between the host that minted a token and this one.
LEEWAY = 30

log = logging.getLogger(__name__)

_bearer = HTTPBearer(
    auto_error=False,  # 401s are ours: the realm and error in WWW-Authenticate, ErrorOut
    bearerFormat="JWT",
    description=f"A token from fastapi-ops-app-token; writes need the scope {WRITE_SCOPE}",
)


def mint(secret: str, audience: str, subject: str, scopes: Iterable[str], ttl: int) -> str:
    """A token for `subject` granting `scopes`, valid `ttl` seconds from now."""
    now = int(time.time())
    claims = {
        "sub": subject,
        "scope": " ".join(scopes),
        "aud": audience,
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(token: str, keys: Sequence[str], audience: str) -> dict[str, Any]:
    """The token's claims if one of `keys` signed it for `audience` and it has not expired;
    jwt.InvalidTokenError otherwise."""
    for key in keys:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],  # never the token's own choice (alg none, RS256)
                audience=audience,
                leeway=LEEWAY,
                options={"require": ["exp", "iat", "sub"], "strict_aud": True},
            )
        except jwt.InvalidSignatureError:
            continue  # signed with another key: maybe a previous one (a rotation)
    raise jwt.InvalidSignatureError("no key verifies the signature")


def _keys(settings: Settings) -> list[str]:
    keys = [settings.secret_key, *settings.secret_keys_previous]
    return [key.get_secret_value() for key in keys if key is not None]


def _quoted(value: str) -> str:
    # An HTTP quoted-string of printable ASCII, whatever APP_NAME holds.
    text = "".join(c if " " <= c <= "~" else "?" for c in value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _refusal(settings: Settings, code: int, detail: str, **params: str) -> HTTPException:
    challenge = ", ".join(
        [f"Bearer realm={_quoted(settings.app_name)}"]
        + [f"{name}={_quoted(value)}" for name, value in params.items()]
    )
    return HTTPException(code, detail, headers={"WWW-Authenticate": challenge})


async def require_write(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse the request (401, 403) unless its bearer token grants WRITE_SCOPE.

    Without any key (SECRET_KEY unset: development and testing only) no token verifies,
    so every write is refused."""
    settings: Settings = request.app.state.settings
    if credentials is None:
        log.info("write refused", extra={"reason": "no bearer token"})
        raise _refusal(settings, status.HTTP_401_UNAUTHORIZED, "a bearer token is required")
    try:
        claims = verify(credentials.credentials, _keys(settings), settings.app_name)
    except jwt.InvalidTokenError as exc:
        # The exception's type only: its message may quote the token's content.
        log.warning("write refused", extra={"reason": type(exc).__name__})
        raise _refusal(
            settings,
            status.HTTP_401_UNAUTHORIZED,
            "the token is not valid",
            error="invalid_token",
            error_description="invalid, expired or not for this app",
        ) from None
    scope = claims.get("scope")
    if WRITE_SCOPE not in (scope.split() if isinstance(scope, str) else []):
        log.warning("write refused", extra={"reason": "insufficient_scope", "sub": claims["sub"]})
        raise _refusal(
            settings,
            status.HTTP_403_FORBIDDEN,
            f"the token does not grant {WRITE_SCOPE}",
            error="insufficient_scope",
            scope=WRITE_SCOPE,
        )
