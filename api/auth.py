"""Bearer tokens for the endpoints that change or reveal the service's state (/feedback,
/metrics): which tokens a setting allows, and whether a request's Authorization header holds
one of them, compared in constant time.

A setting holds one token or several separated by commas (to rotate: add the new one, move the
clients, drop the old one). No setting, no check.
"""

from __future__ import annotations

import hmac

from api.problems import Kind, ServiceError


def tokens_of(setting: str | None) -> tuple[bytes, ...]:
    """The tokens a setting allows ('' or None: none, and no check)."""
    if not setting:
        return ()
    return tuple(t.strip().encode() for t in setting.split(",") if t.strip())


def bearer(authorization: str | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header as the bytes that came (header
    values arrive decoded as latin-1), or None when the header holds no bearer token."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token.encode("latin-1")


def check(allowed: tuple[bytes, ...], authorization: str | None, what: str) -> None:
    """Nothing when ``allowed`` is empty or the header carries one of its tokens; else
    UNAUTHORIZED (no bearer token) or FORBIDDEN (a token that is not one of them)."""
    if not allowed:
        return
    token = bearer(authorization)
    if token is None:
        raise ServiceError(
            Kind.UNAUTHORIZED, f"{what} needs a bearer token: send 'Authorization: Bearer <token>'"
        )
    matched = False
    for candidate in allowed:  # every candidate compared, so the time says nothing
        matched |= hmac.compare_digest(token, candidate)
    if not matched:
        raise ServiceError(Kind.FORBIDDEN, f"the bearer token given is not allowed for {what}")
