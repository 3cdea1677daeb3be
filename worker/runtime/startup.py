"""What a worker says when it starts: its LLM API, hosts and model, whether they answer, and which
it refuses (an Ollama older than 0.5.0 has no JSON-schema ``format``, an OpenAI-compatible server
that does not list the model would answer with another one: each named in one line)."""

from __future__ import annotations

import logging

from worker.redact import redact
from worker.settings import Settings

log = logging.getLogger("qtrain.worker")


def log_startup(settings: Settings) -> None:
    """Log the API/hosts/model/budget this worker will use and a reachability check of each host."""
    log.warning(
        "qtrain worker: database=%s broker=%s llm_api=%s hosts=%s model=%s num_ctx=%s max_tokens=%s"
        " timeout=%ss lease=%ss reap_every=%ss",
        redact(settings.database_url),
        redact(settings.broker_url),
        settings.llm_api,
        redact(",".join(settings.llm_hosts)),
        settings.llm_model,
        settings.llm_num_ctx,
        settings.llm_max_tokens,
        settings.llm_timeout_s,
        settings.lease_s,
        settings.reap_interval_s,
    )
    if settings.llm_api == "openai":
        _check_openai(settings)
    else:
        _check_ollama(settings)


def _check_ollama(settings: Settings) -> None:
    from worker.clients.ollama import OllamaClient, too_old, too_old_message
    from worker.errors import QtrainError

    client = OllamaClient.from_settings(settings)
    try:
        for host in settings.ollama_hosts:
            try:
                version = client.version(host)
                pulled = client.has_model(host)
            except QtrainError as exc:
                log.warning(
                    "ollama host %s: not answering (%s); heuristic batches still run", redact(host), exc
                )
                continue
            if too_old(version):
                log.error("REFUSED %s; its windows would all fail", too_old_message(redact(host), version))
                continue
            state = "pulled" if pulled else f"NOT pulled (run: ollama pull {settings.llm_model})"
            log.warning(
                "ollama host %s: version %s, model %s %s", redact(host), version, settings.llm_model, state
            )
    finally:
        client.close()


def _check_openai(settings: Settings) -> None:
    from worker.clients.openai import OpenAIClient
    from worker.errors import QtrainError

    client = OpenAIClient.from_settings(settings)
    try:
        for host in settings.openai_base_urls:
            try:
                names = client.models(host)
            except QtrainError as exc:
                log.warning(
                    "openai host %s: not answering (%s); heuristic batches still run", redact(host), exc
                )
                continue
            if not client.serves(names):
                log.error(
                    "REFUSED openai host %s: model %s is not served there (it serves: %s); set"
                    " QTRAIN_LLM_MODEL to one of them: its windows would all fail",
                    redact(host),
                    settings.llm_model,
                    ", ".join(names) or "no model",
                )
                continue
            log.warning("openai host %s: serves model %s", redact(host), settings.llm_model)
    finally:
        client.close()
