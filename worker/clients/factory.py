"""The one place that picks the LLM client: Ollama's native API or the OpenAI-compatible one."""

from __future__ import annotations

from typing import Any

from worker.clients.llm import LLMClient
from worker.clients.ollama import OllamaClient
from worker.clients.openai import OpenAIClient
from worker.settings import Settings


def chat_client(settings: Settings, **kwargs: Any) -> LLMClient:
    """The client for ``settings.llm_api`` (QTRAIN_LLM_API: ollama or openai) serving
    ``settings.llm_model``, with the settings' timeout and budget; one per process. Another model
    (a batch's ``--model``): ``chat_client(dataclasses.replace(settings, llm_model=name))``."""
    if settings.llm_api == "openai":
        return OpenAIClient.from_settings(settings, **kwargs)
    return OllamaClient.from_settings(settings, **kwargs)
