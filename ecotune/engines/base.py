"""What every engine returns and the interface the trial runner relies on.

An engine turns prompts plus :class:`~ecotune.decoding.SamplingParams` into
:class:`Completion` records with exact token counts (as the server reports them), so a
trial's spend is what the engine billed, not an estimate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ecotune.decoding import SamplingParams

#: A chat conversation: ``[{"role": "user", "content": "..."}, ...]``.
Messages = list[dict[str, Any]]
#: A prompt is plain text (completions API) or a conversation (chat API).
Prompt = str | Messages


class EngineError(RuntimeError):
    """The engine could not serve a request (after retries) or is misconfigured."""


@dataclass(frozen=True)
class Completion:
    """One request's result.

    Attributes:
        text: The generated text; a list of ``n`` texts when ``params.n > 1``.
        prompt_tokens: Prompt tokens billed (``usage.prompt_tokens``).
        completion_tokens: Generated tokens billed, all ``n`` choices together.
        finish_reason: ``"stop"`` / ``"length"`` (list when ``n > 1``); ``"error"`` when
            the server billed the request (``usage``) but its completion was malformed.
        index: Position of the prompt in the submitted batch.
        unsettled_tokens: Worst cases charged for earlier attempts of this request whose
            outcome stayed unknown (timeouts, dropped connections, unreadable answers).
        error: Why the completion is unusable (with ``finish_reason="error"``), else None.
        reused_tokens: For an answer taken from the response cache (which costs 0), what
            it cost when it was bought.
    """

    text: str | list[str]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | list[str] | None = None
    index: int = 0
    unsettled_tokens: int = 0
    error: str | None = None
    reused_tokens: int = 0

    @property
    def tokens(self) -> int:
        """Everything this request may have cost: usage plus the kept worst cases."""
        return self.prompt_tokens + self.completion_tokens + self.unsettled_tokens

    @property
    def texts(self) -> list[str]:
        """The generated texts, always as a list."""
        return list(self.text) if isinstance(self.text, list) else [self.text]


@runtime_checkable
class Engine(Protocol):
    """The methods the trial runner uses; :class:`OpenAIEngine` and :class:`FakeEngine`
    implement all of them."""

    model: str

    def check(self) -> None: ...

    def count_prompt_tokens(self, prompts: list[Prompt]) -> list[int]: ...

    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[Completion]: ...

    async def agenerate(
        self, prompts: list[Prompt], params: SamplingParams
    ) -> list[Completion]: ...

    async def acomplete_one(
        self, prompt: Prompt, params: SamplingParams, index: int = 0, **charge: Any
    ) -> Completion: ...

    def complete_one(self, prompt: Prompt, params: SamplingParams, **charge: Any) -> Completion: ...

    def agenerate_iter(
        self, prompts: list[Prompt], params: SamplingParams, max_in_flight: int | None = None,
        ledger: Any = None, prompt_tokens: Sequence[int] | None = None,
    ) -> AsyncIterator[Completion]: ...

    def generate_iter(
        self, prompts: list[Prompt], params: SamplingParams, max_in_flight: int | None = None,
        ledger: Any = None, prompt_tokens: Sequence[int] | None = None,
    ) -> Iterator[Completion]: ...

    def close(self) -> None: ...
