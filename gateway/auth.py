"""Token verification (PARLEY_AUTH=jwt): a JWT in, a principal out, or `InvalidToken`.

Keys: an HS256 secret, a PEM public key (RS256/ES256), or a JWKS URL whose keys are cached
and looked up by `kid` (an unknown `kid` refetches the set, at most once per cooldown, so a
rotated key is picked up and a stranger cannot make us hammer the JWKS server). Issuer and
audience are checked when configured; `exp` is required and `nbf` honoured.
"""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
from starlette.requests import HTTPConnection

from parley.identity import InvalidClaims, Principal
from parley.logs import get_logger
from parley.settings import Settings

log = get_logger(__name__)

ASYMMETRIC = ["RS256", "ES256"]
LEEWAY_SECONDS = 30
MAX_TOKEN_CHARS = 8192


class InvalidToken(Exception):
    """A token that names nobody: malformed, forged, expired, or for someone else."""


class TokenVerifier:
    """Verifies tokens for one gateway process, as its settings say."""

    def __init__(self, settings: Settings) -> None:
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._key: Any = None
        self._algorithms: list[str] = []
        self._jwks: jwt.PyJWKClient | None = None
        if settings.jwt_jwks_url:
            self._jwks = jwt.PyJWKClient(
                settings.jwt_jwks_url,
                cache_jwk_set=True,
                lifespan=300,
                timeout=5,
                cooldown_duration=settings.jwt_jwks_cooldown.total_seconds(),
            )
            self._algorithms = ASYMMETRIC
        elif settings.jwt_public_key:
            self._key = settings.jwt_public_key.replace("\\n", "\n")
            self._algorithms = ASYMMETRIC
        elif settings.jwt_secret:
            self._key = settings.jwt_secret.get_secret_value()
            self._algorithms = ["HS256"]

    async def verify(self, token: str) -> Principal:
        """The principal the token names; `InvalidToken` (with a reason safe to log)."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("missing or oversized token")
        try:
            key = self._key
            if self._jwks is not None:  # may fetch the key set: off the event loop
                key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
            return Principal.from_claims(claims)
        except (jwt.PyJWTError, InvalidClaims) as err:
            raise InvalidToken(f"{type(err).__name__}: {err}") from None
        except (ValueError, TypeError) as err:  # a key that does not fit the token's algorithm
            raise InvalidToken(type(err).__name__) from None


def bearer_token(request: HTTPConnection) -> str | None:
    """The token of an `Authorization: Bearer` header, or of `?token=` (WebSocket clients
    cannot set headers)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query_params.get("token") or None


async def principal_of(verifier: TokenVerifier | None, request: HTTPConnection) -> Principal | None:
    """The request's principal, None when it is anonymous; `InvalidToken` for a bad token."""
    if verifier is None:
        return None
    token = bearer_token(request)
    if token is None:
        return None
    return await verifier.verify(token)
