"""An engine for any OpenAI-compatible server (vLLM first of all), over plain httpx.

Why httpx rather than the ``openai`` client: the trial runner needs exact ``usage`` counts,
vLLM's extra sampling fields in the body, vLLM's ``/tokenize`` endpoint and our own retry
policy; a thin async client gives all of that with the same throughput (see
``bench/engine_throughput.py``).

Example:
    >>> eng = OpenAIEngine("http://127.0.0.1:8000", "smollm2-135m-instruct", send_seed=False)
    >>> eng.check()  # doctest: +SKIP
    >>> [c.text for c in eng.generate(["1+1="], SamplingParams(max_tokens=2))]  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from dataclasses import dataclass
from typing import Any

import httpx

from ecotune.engines._runner import BatchMixin
from ecotune.engines.base import Completion, EngineError, Messages, Prompt
from ecotune.sampling import SamplingParams

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass
class _LoopState:
    client: httpx.AsyncClient
    sem: asyncio.Semaphore


def root_url(base_url: str) -> str:
    """``http://h:p`` from ``http://h:p``, ``http://h:p/`` or ``http://h:p/v1``."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class OpenAIEngine(BatchMixin):
    """Completions (or chat) requests with bounded concurrency, retries and exact usage.

    Args:
        base_url: Server root (``http://host:8000``; a trailing ``/v1`` is accepted).
        model: Served model name.
        api_key: Bearer token; default from ``ECOTUNE_API_KEY`` or ``OPENAI_API_KEY``.
        max_concurrency: Most requests in flight at once.
        timeout_s: Per-request timeout.
        max_retries: Retries after the first attempt on 429/5xx, connection errors,
            timeouts and malformed responses; then :class:`EngineError`.
        send_seed: Send ``params.seed``; False for vLLM's CPU build (a seed crashes it).
        use_chat: Send text prompts to ``/v1/chat/completions`` as one user message.
            Prompts given as message lists always use the chat endpoint.
        tokenizer: Local HF tokenizer (path or name) used when the server has no
            ``/tokenize``; default: ``model``.
        backoff_base_s: First retry delay; doubles per attempt (full jitter), capped at
            ``backoff_max_s``. A ``Retry-After`` header is honoured up to the cap.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        send_seed: bool = True,
        use_chat: bool = False,
        *,
        tokenizer: str | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
    ):
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.base_url = root_url(base_url)
        self.model = model
        self.api_key = (
            api_key or os.environ.get("ECOTUNE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        )
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.send_seed = send_seed
        self.use_chat = use_chat
        self.tokenizer = tokenizer
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self._hf_tokenizer: Any = None
        self._has_tokenize: bool | None = None

    def __repr__(self) -> str:
        return f"OpenAIEngine({self.base_url!r}, {self.model!r})"

    # -- plumbing --------------------------------------------------------------------------
    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _state(self) -> _LoopState:
        """Client and semaphore for the running loop (asyncio objects are loop-bound)."""
        loop = asyncio.get_running_loop()
        for other in [lp for lp in self._states if lp.is_closed()]:
            del self._states[other]
        st = self._states.get(loop)
        if st is None:
            limits = httpx.Limits(
                max_connections=self.max_concurrency,
                max_keepalive_connections=self.max_concurrency,
            )
            client = httpx.AsyncClient(
                base_url=self.base_url,
                headers=self.headers,
                timeout=httpx.Timeout(self.timeout_s),
                limits=limits,
            )
            st = self._states[loop] = _LoopState(client, asyncio.Semaphore(self.max_concurrency))
        return st

    async def _aclose(self) -> None:
        loop = asyncio.get_running_loop()
        st = self._states.pop(loop, None)
        if st is not None:
            await st.client.aclose()

    async def aclose(self) -> None:
        """Close the connection pool of the running loop (for callers of the async API)."""
        await self._aclose()

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        cap = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        if retry_after:
            try:
                return min(self.backoff_max_s, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return random.uniform(cap / 2, cap)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries; returns the decoded JSON object."""
        st = self._state()
        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(self.max_retries + 1):
            retry_after: str | None = None
            try:
                async with st.sem:
                    r = await st.client.post(path, json=body)
                if r.status_code in RETRY_STATUS:
                    retry_after = r.headers.get("retry-after")
                    last = f"HTTP {r.status_code}: {r.text[:300]}"
                elif r.status_code >= 400:
                    raise EngineError(
                        f"POST {url} failed with HTTP {r.status_code}: {_error_text(r)}"
                    )
                else:
                    data = r.json()
                    if not isinstance(data, dict):
                        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
                    return data
            except httpx.TimeoutException as e:
                last = f"timeout after {self.timeout_s}s ({type(e).__name__})"
            except httpx.RequestError as e:
                last = f"connection error: {type(e).__name__}: {e}"
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                last = f"malformed response: {e}"
            if attempt < self.max_retries:
                await asyncio.sleep(self._delay(attempt, retry_after))
        raise EngineError(f"POST {url} failed after {self.max_retries + 1} attempts; last: {last}")

    # -- API -------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`EngineError` unless the server answers and serves ``self.model``."""
        url = f"{self.base_url}/v1/models"
        try:
            r = httpx.get(url, headers=self.headers, timeout=min(self.timeout_s, 10.0))
        except httpx.HTTPError as e:
            raise EngineError(
                f"endpoint {self.base_url} unreachable: {type(e).__name__}: {e}"
            ) from e
        if r.status_code != 200:
            raise EngineError(f"endpoint {self.base_url}: GET /v1/models answered "
                              f"HTTP {r.status_code}: {_error_text(r)}")  # fmt: skip
        try:
            served = [m["id"] for m in r.json()["data"]]
        except (ValueError, KeyError, TypeError) as e:
            raise EngineError(f"endpoint {self.base_url}: malformed /v1/models: {e}") from e
        if self.model not in served:
            raise EngineError(
                f"model {self.model!r} not served by {self.base_url}; served: {served}"
            )

    def _request(self, prompt: Prompt, params: SamplingParams) -> tuple[str, dict[str, Any]]:
        body = {"model": self.model, **params.to_request(send_seed=self.send_seed)}
        if isinstance(prompt, list) or self.use_chat:
            body["messages"] = _as_messages(prompt)
            return "/v1/chat/completions", body
        body["prompt"] = prompt
        return "/v1/completions", body

    async def acomplete_one(
        self, prompt: Prompt, params: SamplingParams, index: int = 0
    ) -> Completion:
        """One request; ``index`` is copied into the result for batch bookkeeping."""
        path, body = self._request(prompt, params)
        err: Exception | None = None
        for attempt in range(self.max_retries + 1):
            data = await self._post(path, body)
            try:
                return _parse_completion(data, chat=path.endswith("chat/completions"), index=index)
            except (KeyError, TypeError, ValueError) as e:
                err = e
                if attempt < self.max_retries:
                    await asyncio.sleep(self._delay(attempt, None))
        raise EngineError(
            f"POST {self.base_url}{path}: malformed completion after "
            f"{self.max_retries + 1} attempts: {err!r}"
        )

    async def acount_prompt_tokens(self, prompts: list[Prompt]) -> list[int]:
        """Exact prompt token counts via the server's ``/tokenize`` (vLLM), or a local
        HF tokenizer when the server has none."""
        if self._has_tokenize is not False:
            try:
                return list(await asyncio.gather(*(self._tokenize(p) for p in prompts)))
            except _NoTokenize:
                self._has_tokenize = False
        return [self._local_count(p) for p in prompts]

    def count_prompt_tokens(self, prompts: list[Prompt]) -> list[int]:
        """Sync :meth:`acount_prompt_tokens`."""
        return self._run(self.acount_prompt_tokens(prompts))

    async def _tokenize(self, prompt: Prompt) -> int:
        body: dict[str, Any] = {"model": self.model}
        if isinstance(prompt, list) or self.use_chat:
            body["messages"] = _as_messages(prompt)
        else:
            body["prompt"] = prompt
        try:
            data = await self._post("/tokenize", body)
        except EngineError as e:
            if "HTTP 404" in str(e) or "HTTP 405" in str(e):
                raise _NoTokenize from e
            raise
        self._has_tokenize = True
        try:
            return int(data["count"])
        except (KeyError, TypeError, ValueError) as e:
            raise EngineError(f"malformed /tokenize response: {data!r:.200}") from e

    def _local_count(self, prompt: Prompt) -> int:
        if self._hf_tokenizer is None:
            try:
                from transformers import AutoTokenizer

                self._hf_tokenizer = AutoTokenizer.from_pretrained(self.tokenizer or self.model)
            except Exception as e:  # noqa: BLE001 - any load failure means: cannot count
                raise EngineError(
                    f"{self.base_url} has no /tokenize and no local tokenizer "
                    f"{self.tokenizer or self.model!r} could be loaded: {e}"
                ) from e
        tok = self._hf_tokenizer
        if isinstance(prompt, list) or self.use_chat:
            ids = tok.apply_chat_template(_as_messages(prompt), add_generation_prompt=True,
                                          tokenize=True)  # fmt: skip
            return len(ids["input_ids"] if isinstance(ids, dict) else ids)
        return len(tok(prompt)["input_ids"])


class _NoTokenize(Exception):
    """The server has no ``/tokenize`` endpoint."""


def _as_messages(prompt: Prompt) -> Messages:
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def _parse_completion(data: dict[str, Any], *, chat: bool, index: int) -> Completion:
    choices = sorted(data["choices"], key=lambda c: int(c.get("index", 0)))
    if not choices:
        raise ValueError("no choices in response")
    texts = [(c["message"].get("content") or "") if chat else c["text"] for c in choices]
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("choice text is not a string")
    reasons = [c.get("finish_reason") for c in choices]
    usage = data["usage"]
    return Completion(
        text=texts[0] if len(texts) == 1 else texts,
        prompt_tokens=int(usage["prompt_tokens"]),
        completion_tokens=int(usage["completion_tokens"]),
        finish_reason=reasons[0] if len(reasons) == 1 else reasons,
        index=index,
    )


def _error_text(r: httpx.Response) -> str:
    try:
        data = r.json()
        if isinstance(data, dict):
            err = data.get("error", data.get("detail", data))
            if isinstance(err, dict):
                err = err.get("message", err)
            return str(err)[:500]
    except (json.JSONDecodeError, ValueError):
        pass
    return r.text[:500]
