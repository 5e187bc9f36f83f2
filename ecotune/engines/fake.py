"""A deterministic in-process engine for unit tests of everything above the engine.

Token counts are whitespace-split words, so tests can compute expected spend by hand:
a prompt ``"a b c"`` costs 3 prompt tokens; an answer is cut to ``max_tokens`` words.

Example:
    >>> eng = FakeEngine(answers={"2+2=": "4"})
    >>> c = eng.generate(["2+2="], SamplingParams(max_tokens=4))[0]
    >>> (c.text, c.prompt_tokens, c.completion_tokens)
    ('4', 1, 1)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from ecotune.decoding import SamplingParams
from ecotune.engines.base import Completion, EngineError, Prompt
from ecotune.engines.batch import BatchMixin

#: ``answer(prompt_text, params) -> text``; the prompt text of a conversation is its
#: messages' contents joined by newlines.
AnswerFn = Callable[[str, SamplingParams], str]


def prompt_text(prompt: Prompt) -> str:
    """Plain text of a prompt (message contents joined by newlines)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(str(m.get("content", "")) for m in prompt)


def word_count(prompt: Prompt) -> int:
    """The fake tokenizer: whitespace-split words."""
    return len(prompt_text(prompt).split())


class FakeEngine(BatchMixin):
    """Deterministic engine with the same methods as :class:`OpenAIEngine`.

    Args:
        answers: A mapping from prompt text to answer, or a function
            ``(prompt_text, params) -> answer``. Prompts not in a mapping get ``default``.
        default: Answer for unknown prompts.
        model: Reported model name (``check`` accepts only this).
        fail_after: Raise :class:`EngineError` on every request after this many
            (to test error handling); None never fails.
        delay_s: Simulated latency per request (lets tests see concurrency).

    Attributes:
        requests: Every (prompt, params) served, in submission order.
    """

    def __init__(
        self,
        answers: Mapping[str, str] | AnswerFn | None = None,
        default: str = "",
        model: str = "fake",
        max_concurrency: int = 8,
        fail_after: int | None = None,
        delay_s: float = 0.0,
    ):
        self.answers = answers or {}
        self.default = default
        self.model = model
        self.max_concurrency = max_concurrency
        self.fail_after = fail_after
        self.delay_s = delay_s
        self.requests: list[tuple[Prompt, SamplingParams]] = []

    def __repr__(self) -> str:
        return f"FakeEngine(model={self.model!r})"

    def check(self) -> None:
        """Always reachable; serves only ``self.model``."""

    def count_prompt_tokens(self, prompts: list[Prompt]) -> list[int]:
        return [word_count(p) for p in prompts]

    async def acount_prompt_tokens(self, prompts: list[Prompt]) -> list[int]:
        return self.count_prompt_tokens(prompts)

    def _answer(self, text: str, params: SamplingParams) -> str:
        if callable(self.answers):
            return self.answers(text, params)
        return self.answers.get(text, self.default)

    async def asend(self, prompt: Prompt, params: SamplingParams, index: int = 0) -> Completion:
        """One attempt: the answer, cut to ``max_tokens`` words (a failure is an unknown
        outcome, so a ledger keeps its worst case)."""
        self.requests.append((prompt, params))
        if self.fail_after is not None and len(self.requests) > self.fail_after:
            raise EngineError(f"fake engine failure on request {len(self.requests)}")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        text = prompt_text(prompt)
        words = self._answer(text, params).split()
        out = " ".join(words[: params.max_tokens])
        reason = "length" if len(words) > params.max_tokens else "stop"
        n_out = min(len(words), params.max_tokens)
        return Completion(
            text=out if params.n == 1 else [out] * params.n,
            prompt_tokens=word_count(prompt),
            completion_tokens=n_out * params.n,
            finish_reason=reason if params.n == 1 else [reason] * params.n,
            index=index,
        )
