"""Never pay twice: a content-addressed store of deterministic answers.

Under deterministic decoding (greedy; seeded sampling where the engine honours seeds) the
same request gets the same answer, so an answer already bought is reused instead of bought
again, across trials, fidelities, resumes and later studies of the same model. The key is
what decides the answer and nothing else (as lm-evaluation-harness's ``CachingLM`` and
DSPy's LM cache do): the model, the exact prompt and the output-shaping settings. An answer
that stopped by itself (``finish_reason == "stop"``) after k tokens answers the same request
with any ``max_tokens >= k`` too; one cut at ``max_tokens`` only that exact request.

Entries live in a :class:`~ecotune.storage.Store` (a local folder or ``s3://``), one small
JSON object each, written atomically, so concurrent evaluators share the cache safely.

Example:
    >>> cache = ResponseCache(open_store("runs/cache"), model="smollm2")   # doctest: +SKIP
    >>> cache.get(prompt, params) or engine.complete_one(prompt, params)   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

from ecotune.decoding import SamplingParams
from ecotune.engines.base import Completion, Prompt
from ecotune.storage import Store, open_store

log = logging.getLogger(__name__)


class ResponseCache:
    """Deterministic answers of one model, content-addressed.

    Args:
        store: where entries live.
        model: the served model's name (part of every key).
        seeded: the engine honours per-request seeds, so seeded sampling is deterministic
            and cacheable too (False for vLLM's CPU build, which is sent no seed).
    """

    def __init__(self, store: Store, model: str, *, seeded: bool = False):
        self.store = store
        self.model = model
        self.seeded = seeded

    @classmethod
    def open(cls, uri: str | os.PathLike[str], model: str, *, seeded: bool = False
             ) -> ResponseCache:
        return cls(open_store(uri), model, seeded=seeded)

    def cacheable(self, params: SamplingParams) -> bool:
        """Does this request always get the same answer?"""
        if params.n != 1:
            return False
        return params.greedy or (self.seeded and params.seed is not None)

    def _base(self, prompt: Prompt, params: SamplingParams) -> str:
        settings = params.model_dump(exclude={"max_tokens"})
        if params.greedy or not self.seeded:
            settings.pop("seed")
        blob = json.dumps({"model": self.model, "prompt": prompt, "settings": settings},
                          sort_keys=True, ensure_ascii=False)
        digest = hashlib.sha256(blob.encode()).hexdigest()
        return f"{digest[:2]}/{digest}"

    def get(self, prompt: Prompt, params: SamplingParams) -> Completion | None:
        """The cached answer to this request, costing 0 tokens, or None.

        ``reused_tokens`` on the returned completion are the tokens it cost when bought.
        """
        if not self.cacheable(params):
            return None
        base = self._base(prompt, params)
        for name in ("stop.json", f"length-{params.max_tokens}.json"):
            entry = self._read(f"{base}/{name}")
            if entry is None:
                continue
            if name == "stop.json" and params.max_tokens < int(entry["completion_tokens"]):
                continue  # a shorter limit would have cut it off
            return Completion(text=entry["text"], prompt_tokens=0, completion_tokens=0,
                              finish_reason=entry["finish_reason"],
                              reused_tokens=int(entry["prompt_tokens"])
                              + int(entry["completion_tokens"]))
        return None

    def put(self, prompt: Prompt, params: SamplingParams, c: Completion) -> bool:
        """Store a fresh, usable answer to a cacheable request; True if stored."""
        if not self.cacheable(params) or c.error is not None or not isinstance(c.text, str):
            return False
        if c.finish_reason not in ("stop", "length"):
            return False
        name = "stop.json" if c.finish_reason == "stop" else f"length-{params.max_tokens}.json"
        entry = {"text": c.text, "finish_reason": c.finish_reason,
                 "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                 "max_tokens": params.max_tokens, "model": self.model}
        self.store.write_bytes(f"{self._base(prompt, params)}/{name}",
                               json.dumps(entry, sort_keys=True).encode())
        return True

    def _read(self, key: str) -> dict[str, Any] | None:
        try:
            if not self.store.exists(key):
                return None
            return json.loads(self.store.read_bytes(key))
        except (OSError, ValueError) as e:  # a torn or unreadable entry is a miss
            log.warning("response cache: ignoring unreadable entry %s: %s", key, e)
            return None
