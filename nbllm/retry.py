"""When to try a failed request again, and how long to wait: one policy for every call.

The SDKs' own retries are off (each client is built with `max_retries=0`): retrying
here means one rule for `ask`, streams before their first chunk, `map` and
`compare`, read from the facts a `ModelError` carries (`retryable`,
`retry_after`) — never from the SDK exception behind it. A refused connection is not
retryable, so it fails at once instead of after seconds of backoff.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import ModelError

__all__ = ["RetryPolicy", "retry_delay"]


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry and how long to wait between attempts.

    `retries=None` means the provider's `{P}_MAX_RETRIES`. Between attempts the wait is
    what the server's `Retry-After` asked (at most `max_wait`), else `backoff * 2**attempt`
    with ±50 % jitter (also at most `max_wait`).
    """

    retries: int | None = None
    backoff: float = 0.5
    max_wait: float = 30.0

    def delay(self, error: BaseException, attempt: int) -> float | None:
        """Seconds before attempt `attempt + 1`, or None when `error` is not worth retrying."""
        return retry_delay(error, attempt, self.backoff, self.max_wait)


def retry_delay(exc: BaseException, attempt: int, backoff: float, max_wait: float) -> float | None:
    """Seconds to wait before trying again, or None if this failure is not worth retrying.

    Reads a `ModelError`'s facts; any other exception is first described the way a
    call's failure is (`failures.describe_failure`), so a raw SDK error gets the same answer.
    """
    error = exc if isinstance(exc, ModelError) else _describe(exc)
    if not error.retryable:
        return None
    if error.retry_after is not None and error.retry_after >= 0:
        return min(error.retry_after, max_wait)
    return min(backoff * (2 ** attempt) * (0.5 + random.random()), max_wait)


def _describe(exc: BaseException) -> ModelError:
    from .failures import describe_failure

    return describe_failure(exc, "?", None)
