"""Unit tests of the simulator's parts that need no HTTP: OAuth tokens, the rate limit and the fault book."""

from __future__ import annotations

import base64

import pytest

from airflow_provider_wdata.testing import Fault, ManualClock
from airflow_provider_wdata.testing.faults import FaultBook
from airflow_provider_wdata.testing.oauth import OAuthServer
from airflow_provider_wdata.testing.ratelimit import RateLimiter

CREDENTIALS = {"grant_type": "client_credentials", "client_id": "id", "client_secret": "secret"}


def test_oauth_issues_tokens_that_expire() -> None:
    clock = ManualClock()
    oauth = OAuthServer("id", "secret", token_lifetime=10, token_prefix="tok-", clock=clock)
    status, payload, headers = oauth.token_endpoint({**CREDENTIALS, "scope": "s"}, "")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert payload["token_type"] == "Bearer" and payload["expires_in"] == 10 and payload["scope"] == "s"
    token = payload["access_token"]
    assert token.startswith("tok-") and oauth.issued == [token]
    assert oauth.check_bearer(f"Bearer {token}") is None and oauth.client_of(f"Bearer {token}") == "id"
    clock.advance(10)
    denied = oauth.check_bearer(f"Bearer {token}")
    assert denied is not None and 'error="invalid_token"' in denied[1]


def test_oauth_refuses_bad_clients_and_grants() -> None:
    oauth = OAuthServer("id", "secret", token_lifetime=599.5)
    basic = "Basic " + base64.b64encode(b"id:secret").decode()
    status, payload, _ = oauth.token_endpoint({"grant_type": "client_credentials"}, basic)
    assert status == 200 and payload["expires_in"] == 599.5
    assert oauth.token_endpoint({**CREDENTIALS, "client_secret": "no"}, "")[:2] == (
        401,
        {"error": "invalid_client", "error_description": "Client authentication failed"},
    )
    assert oauth.token_endpoint({"grant_type": "client_credentials"}, "Basic %%%")[0] == 401
    assert oauth.token_endpoint({**CREDENTIALS, "grant_type": "password"}, "")[1]["error"] == "unsupported_grant_type"
    assert oauth.token_endpoint({"client_id": "id", "client_secret": "secret"}, "")[1]["error"] == "invalid_request"
    assert len(oauth.issued) == 1
    assert oauth.check_bearer("")[0] == "Unauthorized: a bearer token is required"  # type: ignore[index]
    assert oauth.check_bearer("Bearer forged") is not None and oauth.client_of("Bearer forged") is None
    oauth.expire_all()
    assert oauth.check_bearer(f"Bearer {oauth.issued[0]}") is not None
    oauth.reset()
    assert oauth.issued == []


def test_rate_limiter_counts_per_client_over_a_sliding_window() -> None:
    clock = ManualClock()
    limiter = RateLimiter(limit=2, window=60, clock=clock)
    assert [limiter.admit("a"), limiter.admit("a"), limiter.admit("b")] == [None, None, None]
    clock.advance(20)
    assert limiter.admit("a") == 40 and limiter.refused == 1
    clock.advance(40)
    assert limiter.admit("a") is None  # both earlier requests left the window
    assert limiter.admit("a") is None and limiter.admit("a") == 60
    assert limiter.refused == 2
    limiter.reset()
    assert limiter.refused == 0 and limiter.admit("a") is None


def test_rate_limiter_off_and_validation() -> None:
    limiter = RateLimiter()
    assert all(limiter.admit("a") is None for _ in range(100)) and limiter.refused == 0
    limiter.configure(1, window=0.5)
    assert limiter.admit("a") is None and limiter.admit("a") == 1  # Retry-After is at least one second
    for limit, window in ((0, 1.0), (True, 1.0), (1.5, 1.0), (1, 0.0)):
        with pytest.raises(ValueError):
            limiter.configure(limit, window)  # type: ignore[arg-type]


def test_fault_book_skips_fires_and_drops_exhausted_faults() -> None:
    book = FaultBook()
    assert not book and book.take("GET", "/x", "/x") is None
    skipping = book.add(Fault(method="get", path_contains="batch", skip=1, times=2))
    forever = book.add(Fault(path_contains="?jobId=", times=None))
    assert book.take("POST", "/batch", "/batch") is None  # wrong method
    taken = [book.take("GET", "/batch/1", "/batch/1") for _ in range(4)]
    assert taken == [None, skipping, skipping, None] and skipping.fired == 2
    assert book.snapshot() == [forever]
    assert book.take("GET", "/status", "/status?jobId=1") is forever
    assert book.take("GET", "/status", "/status?jobId=2") is forever and forever.fired == 2
    book.clear()
    assert book.snapshot() == []


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault(kind="explode")
    with pytest.raises(ValueError):
        Fault(times=-1)
    assert Fault(times=0).exhausted
