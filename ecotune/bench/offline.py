"""vLLM's offline engine in this process, for recording benchmark tables fast on CPUs.

Recording a table asks the same prompt of a sampled config several times. Through the
OpenAI server each repeat is a request of its own (the server reports one ``usage`` per
request, not per choice), so the prompt is prefilled once per repeat and a decode step
carries only as many sequences as the client keeps in flight. The offline ``LLM`` takes a
whole config's prompts at once, samples the repeats as ``n`` choices of one request (one
prefill) and reports each choice's own token ids, so every repeat still has its exact
completion tokens.

The request settings go through the server's own request model (``CompletionRequest`` →
``to_sampling_params``), so a table recorded here decodes exactly as the server would.
Prompt tokens are the server's count too (the same tokenizer, no template on the
completions path), and are recorded per request as the server would bill them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecotune.decoding import SamplingParams


@dataclass
class Sample:
    """One choice of one request: text, the request's prompt tokens, this choice's
    completion tokens and why it stopped."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class OfflineEngine:
    """An in-process vLLM ``LLM`` over a local model folder (see
    :func:`ecotune.serve_local.prepare_model`).

    Args:
        model_dir: the model folder.
        model: the name recorded as the served model.
        max_num_seqs: sequences per decode step (large batches amortise the CPU's per-step
            overhead).
        kv_cache_gib: KV cache on the CPU build (``VLLM_CPU_KVCACHE_SPACE``).
    """

    def __init__(self, model_dir: str | Path, model: str, max_num_seqs: int = 256,
                 kv_cache_gib: int = 4, max_model_len: int = 2048):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from vllm import LLM

        self.model = model
        self.llm = LLM(model=str(model_dir), dtype="float32", enforce_eager=True,
                       max_model_len=max_model_len, generation_config="vllm",
                       enable_prefix_caching=True, max_num_seqs=max_num_seqs)

    def sample(self, prompts: list[str], params: SamplingParams, n: int) -> list[list[Sample]]:
        """``n`` choices for every prompt, in order: ``out[j][r]`` is repeat ``r`` of prompt
        ``j``."""
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest

        body: dict[str, Any] = params.to_request(send_seed=False)
        body["n"] = n
        sp = CompletionRequest(model=self.model, prompt=prompts[0], **body).to_sampling_params(
            max_tokens=params.max_tokens)
        outs = self.llm.generate(prompts, sp, use_tqdm=False)
        return [[Sample(text=c.text, prompt_tokens=len(o.prompt_token_ids or []),
                        completion_tokens=len(c.token_ids), finish_reason=str(c.finish_reason))
                 for c in o.outputs] for o in outs]

    def close(self) -> None:
        """Release the engine (its worker processes)."""
        del self.llm
