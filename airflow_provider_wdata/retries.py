"""The hook's retry policy, as tenacity arguments: which failures are tried again, how long to wait, what to log."""

from __future__ import annotations

from typing import Any

import tenacity

from airflow_provider_wdata.exceptions import WdataError

#: Defaults of the policy (each is a WdataHook argument).
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BACKOFF_INITIAL = 1.0
DEFAULT_BACKOFF_MAX = 30.0
DEFAULT_RETRY_AFTER_MAX = 120.0


class WaitRetryAfterOr(tenacity.wait.wait_base):
    """Wait as long as the service asked (``Retry-After``, capped), else fall back to ``backoff``.

    ``Retry-After: 0`` (or a date already past) falls back too: taken literally, every try left would go out at
    once and the call would fail within milliseconds of the first answer.
    """

    def __init__(self, backoff: tenacity.wait.wait_base, cap: float) -> None:
        self.backoff = backoff
        self.cap = cap

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            return min(float(retry_after), self.cap)
        return float(self.backoff(retry_state))


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, WdataError) and error.retryable


def retry_policy(
    call: object, *, max_attempts: int, backoff_initial: float, backoff_max: float, retry_after_max: float, log: Any
) -> dict[str, Any]:
    """tenacity's arguments for one ``call`` (named in the warning logged before each new try)."""

    def log_retry(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0
        log.warning(
            "Wdata call %s: try %d of %d failed: %s Trying again in %.1f s.",
            call,
            state.attempt_number,
            max_attempts,
            error,
            wait,
        )

    backoff = tenacity.wait_exponential_jitter(initial=backoff_initial, max=backoff_max, jitter=backoff_initial)
    return {
        "stop": tenacity.stop_after_attempt(max_attempts),
        "wait": WaitRetryAfterOr(backoff, retry_after_max),
        "retry": tenacity.retry_if_exception(is_retryable),
        "before_sleep": log_retry,
        "reraise": True,
    }
