"""qtrain's exceptions: one base, two branches.

``TemporaryError``: worth a retry (an LLM call timed out or answered 503, a database restart); the
analyse task retries on it with ``worker.retry.backoff_s``. ``PermanentError``: retrying cannot
help (bad input, a missing model, invalid model output); the window is recorded as failed with the
message.
The CLI prints any ``QtrainError`` as one line and exits 2.
"""

from __future__ import annotations


class QtrainError(Exception):
    """Raised for any failure qtrain explains to the user in one line."""


class TemporaryError(QtrainError):
    """Raised when an operation failed for a reason that may pass; retry with backoff."""


class PermanentError(QtrainError):
    """Raised when an operation cannot succeed by retrying."""


class BadInput(PermanentError):
    """Raised when user input (a file, a flag, a symbol) is invalid."""


class ServiceUnavailable(TemporaryError):
    """Raised when PostgreSQL, Redis or an LLM server cannot be reached."""


class LLMBusy(TemporaryError):
    """Raised when an LLM server answers 503 (its queue is full, or it is loading) or 429."""


class LLMTimeout(TemporaryError):
    """Raised when an LLM call takes longer than its timeout."""


class LLMServerError(TemporaryError):
    """Raised when an LLM server answers a 5xx other than 503, or a 200 that is not a chat answer."""


class ModelNotFound(PermanentError):
    """Raised when an LLM server does not have the model (not pulled on that host, or not served)."""


class InvalidModelOutput(PermanentError):
    """Raised when the model's answer cannot be parsed or repaired into the answer schema."""
