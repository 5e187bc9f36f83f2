"""Inference settings as sent to an engine.

A trial's config names a subset of these fields; the rest take neutral values so every
sampling parameter is sent explicitly (vLLM silently ignores unknown fields and falls back
to the model's ``generation_config`` for unsent ones, which would make trials incomparable).

Requests are canonical: under greedy decoding (``decoding: greedy``, or a temperature of
0) the knobs that only shape sampling (top_p, top_k, min_p, seed) take their neutral
values, so two configs that decode identically send the same request (and share cached
answers, see :mod:`ecotune.cache`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: vLLM treats a temperature below this as greedy decoding (``_SAMPLING_EPS``).
GREEDY_EPS = 1e-5
#: Settings that change nothing under greedy decoding.
GREEDY_INERT = ("top_p", "top_k", "min_p", "seed")


class SamplingParams(BaseModel):
    """Sampling settings of one request (OpenAI fields plus vLLM's extras)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1)  # -1: off (vLLM convention)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    max_tokens: int = Field(16, ge=1)
    repetition_penalty: float = Field(1.0, gt=0.0)
    length_penalty: float = Field(1.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    n: int = Field(1, ge=1)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)

    @classmethod
    def from_config(cls, config: dict[str, Any], **overrides: Any) -> SamplingParams:
        """Build from a trial config; keys that are not sampling fields (e.g. ``few_shot``)
        are ignored here and used by the task."""
        fields = {k: v for k, v in config.items() if k in cls.model_fields}
        if config.get("decoding") == "greedy":
            fields["temperature"] = 0.0
        elif config.get("decoding") not in (None, "sample"):
            raise ValueError(f"decoding must be 'greedy' or 'sample', got {config['decoding']!r}")
        fields.update({k: v for k, v in overrides.items() if v is not None})
        if "top_k" in fields and fields["top_k"] is not None and int(fields["top_k"]) == 0:
            fields["top_k"] = -1
        if float(fields.get("temperature", 0.0)) <= GREEDY_EPS:
            fields["temperature"] = 0.0
            for k in GREEDY_INERT:
                fields.pop(k, None)
        return cls(**fields)

    @property
    def greedy(self) -> bool:
        return self.temperature <= GREEDY_EPS

    def to_request(self, *, send_seed: bool = True) -> dict[str, Any]:
        """Every field, explicitly: the OpenAI ones top-level, vLLM extras alongside
        (pass as ``extra_body`` with the openai client). ``send_seed=False`` for vLLM's
        CPU build, where a per-request seed crashes the engine."""
        d = self.model_dump()
        if not send_seed or d["seed"] is None:
            d.pop("seed")
        if not d["stop"]:
            d.pop("stop")
        return d

    def worst_case_completion_tokens(self) -> int:
        """Most completion tokens one request can produce."""
        return self.max_tokens * self.n


def few_shot_count(config: dict[str, Any], default: int) -> int:
    """The number of in-context examples a config asks for."""
    return int(config.get("few_shot", default))
