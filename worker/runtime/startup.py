"""What a worker says when it starts: its Ollama hosts and model, whether they answer, and which it
refuses (an Ollama older than 0.5.0 has no JSON-schema ``format``: named with its version)."""

from __future__ import annotations

import logging

from worker.settings import Settings
from worker.store.db import redact

log = logging.getLogger("qtrain.worker")


def log_startup(settings: Settings) -> None:
    """Log the hosts/model this worker will call and a reachability check of each host."""
    from worker.clients.ollama import OllamaClient, too_old, too_old_message
    from worker.errors import QtrainError

    log.warning(
        "qtrain worker: database=%s broker=%s ollama_hosts=%s model=%s timeout=%ss lease=%ss reap_every=%ss",
        redact(settings.database_url),
        redact(settings.broker_url),
        ",".join(settings.ollama_hosts),
        settings.ollama_model,
        settings.ollama_timeout_s,
        settings.lease_s,
        settings.reap_interval_s,
    )
    client = OllamaClient.from_settings(settings)
    for host in settings.ollama_hosts:
        try:
            version = client.version(host)
            pulled = client.has_model(host)
        except QtrainError as exc:
            log.warning("ollama host %s: not answering (%s); heuristic batches still run", host, exc)
            continue
        if too_old(version):
            log.error("REFUSED %s; its windows would all fail", too_old_message(host, version))
            continue
        state = "pulled" if pulled else f"NOT pulled (run: ollama pull {settings.ollama_model})"
        log.warning("ollama host %s: version %s, model %s %s", host, version, settings.ollama_model, state)
