"""What a worker says when it starts: its Ollama hosts and model, and whether they answer."""

from __future__ import annotations

import logging

from worker.db import redact
from worker.settings import Settings

log = logging.getLogger("qtrain.worker")


def log_startup(settings: Settings) -> None:
    """Log the hosts/model this worker will call and a reachability check of each host."""
    from worker.errors import QtrainError
    from worker.ollama import OllamaClient

    log.warning(
        "qtrain worker: database=%s ollama_hosts=%s model=%s timeout=%ss",
        redact(settings.database_url),
        ",".join(settings.ollama_hosts),
        settings.ollama_model,
        settings.ollama_timeout_s,
    )
    client = OllamaClient.from_settings(settings)
    for host in settings.ollama_hosts:
        try:
            version = client.version(host)
            pulled = client.has_model(host)
        except QtrainError as exc:
            log.warning("ollama host %s: not answering (%s); heuristic batches still run", host, exc)
            continue
        state = "pulled" if pulled else f"NOT pulled (run: ollama pull {settings.ollama_model})"
        log.warning("ollama host %s: version %s, model %s %s", host, version, settings.ollama_model, state)
