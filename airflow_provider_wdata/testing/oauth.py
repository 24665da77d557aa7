"""The simulated OAuth2 client-credentials token endpoint and the bearer tokens it issues. No I/O."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

__all__ = ["OAuthServer", "TokenAnswer"]

#: (HTTP status, JSON payload, headers) of a token endpoint answer.
TokenAnswer = tuple[int, dict[str, Any], dict[str, str]]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_REALM = 'realm="wdata-simulator"'


class OAuthServer:
    """Issues tokens to the one client it knows and checks the bearer tokens of API calls. Thread-safe."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        token_lifetime: float,
        token_prefix: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        #: Put in front of every issued token, so that a test can look for tokens in any output.
        self.token_prefix = token_prefix
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[float, str]] = {}  # token -> (expiry on the clock, client id)
        self._issued: list[str] = []

    def token_endpoint(self, form: Mapping[str, str], authorization: str) -> TokenAnswer:
        """Answer a token request: its form-encoded body, and its Authorization header (HTTP Basic or "")."""
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization[:6].lower() == "basic ":
            client_id, client_secret = _basic_credentials(authorization[6:])
        if not (
            client_id is not None
            and client_secret is not None
            and hmac.compare_digest(client_id.encode(), self.client_id.encode())
            and hmac.compare_digest(client_secret.encode(), self.client_secret.encode())
        ):
            return (
                401,
                {"error": "invalid_client", "error_description": "Client authentication failed"},
                {**_NO_STORE, "WWW-Authenticate": f"Basic {_REALM}"},
            )
        grant_type = form.get("grant_type")
        if not grant_type:
            return 400, {"error": "invalid_request", "error_description": "Missing grant_type"}, dict(_NO_STORE)
        if grant_type != "client_credentials":
            description = f"Unsupported grant_type {grant_type!r}; use client_credentials"
            return 400, {"error": "unsupported_grant_type", "error_description": description}, dict(_NO_STORE)
        token = self.token_prefix + secrets.token_urlsafe(32)
        lifetime = self.token_lifetime
        with self._lock:
            self._tokens[token] = (self._clock() + lifetime, client_id)
            self._issued.append(token)
        expires_in: float = int(lifetime) if float(lifetime).is_integer() else lifetime
        payload = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": form.get("scope", ""),
        }
        return 200, payload, dict(_NO_STORE)

    def check_bearer(self, authorization: str) -> tuple[str, str] | None:
        """``None`` when the Authorization header carries a valid token, else (message, WWW-Authenticate)."""
        token = _bearer_token(authorization)
        if token is None:
            return "Unauthorized: a bearer token is required", f"Bearer {_REALM}"
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or self._clock() >= entry[0]:
            return "Unauthorized: the access token is invalid or expired", f'Bearer {_REALM}, error="invalid_token"'
        return None

    def client_of(self, authorization: str) -> str | None:
        """The client id a bearer token was issued to (``None``: no such token)."""
        token = _bearer_token(authorization)
        with self._lock:
            entry = self._tokens.get(token) if token is not None else None
        return entry[1] if entry is not None else None

    def expire_all(self) -> None:
        with self._lock:
            for token, (_, client_id) in self._tokens.items():
                self._tokens[token] = (float("-inf"), client_id)

    @property
    def issued(self) -> list[str]:
        with self._lock:
            return list(self._issued)

    def reset(self) -> None:
        with self._lock:
            self._tokens.clear()
            self._issued.clear()


def _bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _basic_credentials(encoded: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    user, _, password = decoded.partition(":")
    return unquote(user), unquote(password)
