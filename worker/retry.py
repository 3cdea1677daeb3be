"""The one backoff formula of every retry: a window's next attempt, an LLM call, an exchange call."""

from __future__ import annotations

import random


def backoff_s(attempt: int, *, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry ``attempt`` (1-based): ``base_s * 2**(attempt-1)``, never above ``cap_s``.

    With ``rng`` the delay has equal jitter (half fixed, half uniform), so retries of many tasks
    that failed together spread out and the cap still holds; without, it is the plain exponential.
    """
    delay = min(cap_s, base_s * 2.0 ** max(0, attempt - 1))
    return delay if rng is None else delay / 2 + rng.uniform(0, delay / 2)
