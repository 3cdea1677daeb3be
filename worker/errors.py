"""qtrain's exceptions: one base, two branches.

``TemporaryError``: worth a retry (Ollama timeout or 503, a database restart); the analyse task
retries on it with ``worker.retry.backoff_s``. ``PermanentError``: retrying cannot help (bad input, a missing
model, invalid model output); the window is recorded as failed with the message.
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
    """Raised when PostgreSQL, Redis or an Ollama host cannot be reached."""


class OllamaBusy(TemporaryError):
    """Raised when Ollama answers 503 (its queue is full) or 429."""


class OllamaTimeout(TemporaryError):
    """Raised when an Ollama call takes longer than its timeout."""


class OllamaServerError(TemporaryError):
    """Raised when Ollama answers a 5xx other than 503."""


class ModelNotFound(PermanentError):
    """Raised when Ollama answers 404: the model is not pulled on that host."""


class InvalidModelOutput(PermanentError):
    """Raised when the model's answer cannot be parsed or repaired into the answer schema."""
