"""Inference engines: where prompts become completions with exact token counts.

``make_engine`` builds one from an :class:`EngineConfig` (or its dict form, as found in a
study config). ``base_url="fake://"`` gives a :class:`FakeEngine` (for dry runs and tests).
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ecotune.engines.base import Completion, Engine, EngineError, Messages, Prompt
from ecotune.engines.fake import FakeEngine
from ecotune.engines.openai_compat import OpenAIEngine

__all__ = [
    "Completion",
    "Engine",
    "EngineConfig",
    "EngineError",
    "FakeEngine",
    "Messages",
    "OpenAIEngine",
    "Prompt",
    "make_engine",
]


class EngineConfig(BaseModel):
    """How to reach an OpenAI-compatible server.

    ``api_key_env`` names the environment variable holding the key (the key itself never
    goes into a config file); None means ``ECOTUNE_API_KEY`` then ``OPENAI_API_KEY``.
    ``send_seed`` must be False for vLLM's CPU build (the embedded default).
    """

    model_config = ConfigDict(extra="forbid")

    base_url: str
    model: str
    api_key_env: str | None = None
    max_concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0)
    send_seed: bool = True
    use_chat: bool = False
    tokenizer: str | None = None


def make_engine(spec: EngineConfig | dict[str, Any]) -> OpenAIEngine | FakeEngine:
    """Build the engine a config describes (validating a dict first)."""
    cfg = spec if isinstance(spec, EngineConfig) else EngineConfig.model_validate(spec)
    if cfg.base_url.startswith("fake://"):
        return FakeEngine(model=cfg.model, max_concurrency=cfg.max_concurrency)
    api_key = None
    if cfg.api_key_env:
        api_key = os.environ.get(cfg.api_key_env)
        if api_key is None:
            raise EngineError(f"environment variable {cfg.api_key_env} (API key) is not set")
    return OpenAIEngine(
        cfg.base_url,
        cfg.model,
        api_key=api_key,
        max_concurrency=cfg.max_concurrency,
        timeout_s=cfg.timeout_s,
        max_retries=cfg.max_retries,
        send_seed=cfg.send_seed,
        use_chat=cfg.use_chat,
        tokenizer=cfg.tokenizer,
    )
