"""An engine for any OpenAI-compatible server (vLLM first of all), over plain httpx.

Why httpx rather than the ``openai`` client: the trial runner needs exact ``usage`` counts,
vLLM's extra sampling fields in the body, vLLM's ``/tokenize`` endpoint, and to know how
each attempt ended (refused, answered, or unknown) so that it can charge it (see
:mod:`ecotune.engines.retry` and :mod:`ecotune.ledger`); a thin async client gives all of
that with the same throughput (see ``ecotune/bench/engine_throughput.py``). This module sends one
attempt at a time; the retry policy lives in one place, the batch layer.

Example:
    >>> eng = OpenAIEngine("http://127.0.0.1:8000", "smollm2-135m-instruct", send_seed=False)
    >>> eng.check()  # doctest: +SKIP
    >>> [c.text for c in eng.generate(["1+1="], SamplingParams(max_tokens=2))]  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any

import httpx

from ecotune.decoding import SamplingParams
from ecotune.engines.base import Completion, EngineError, Messages, Prompt
from ecotune.engines.batch import BatchMixin
from ecotune.engines.retry import OutcomeUnknown, Refused, parse_retry_after, with_retries

#: Refused before any work, worth another try: nothing was billed.
RETRY_REFUSED = frozenset({408, 425, 429, 503})
#: The server failed after the request reached it: it may have generated and billed.
UNKNOWN_STATUS = frozenset({500, 502, 504})
#: The connection was never opened or the request never left: nothing can have been billed.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


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
        max_retries: Retries after the first attempt on 408/425/429/5xx, connection
            errors, timeouts and unreadable answers; then :class:`EngineError`. Each retry
            is a new request that the caller's ledger must authorize.
        send_seed: Send ``params.seed``; False for vLLM's CPU build (a seed crashes it).
        use_chat: Send text prompts to ``/v1/chat/completions`` as one user message.
            Prompts given as message lists always use the chat endpoint.
        tokenizer: Local HF tokenizer (path or name) used when the server has no
            ``/tokenize``; default: ``model``.
        backoff_base_s: Scale of the retry delay; doubles per attempt (full jitter), capped
            at ``backoff_max_s``. A ``Retry-After`` header is honoured up to the cap.
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

    async def _post_once(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One POST; the decoded JSON object, or a classified failure (see module doc)."""
        st = self._state()
        url = f"{self.base_url}{path}"
        try:
            async with st.sem:
                r = await st.client.post(path, json=body)
        except NOT_SENT as e:
            raise Refused(f"connection error: {type(e).__name__}: {e}", retryable=True) from e
        except httpx.TimeoutException as e:
            raise OutcomeUnknown(f"timeout after {self.timeout_s}s ({type(e).__name__})") from e
        except httpx.RequestError as e:
            raise OutcomeUnknown(f"connection error: {type(e).__name__}: {e}") from e
        if r.status_code in RETRY_REFUSED:
            raise Refused(f"HTTP {r.status_code}: {r.text[:300]}", retryable=True,
                          retry_after=parse_retry_after(r.headers.get("retry-after")))
        if r.status_code in UNKNOWN_STATUS:
            raise OutcomeUnknown(f"HTTP {r.status_code}: {r.text[:300]}")
        if r.status_code >= 400:
            raise Refused(f"POST {url} failed with HTTP {r.status_code}: {_error_text(r)}",
                          retryable=False)
        try:
            data = r.json()
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            raise OutcomeUnknown(f"malformed response: {e}") from e
        if not isinstance(data, dict):
            raise OutcomeUnknown(f"malformed response: a JSON {type(data).__name__}")
        return data

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A POST that bills nothing (``/tokenize``), under the same retry policy."""
        return await with_retries(lambda _: self._post_once(path, body),
                                  f"POST {self.base_url}{path}", self.max_retries,
                                  self.backoff_base_s, self.backoff_max_s)

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

    async def asend(self, prompt: Prompt, params: SamplingParams, index: int = 0) -> Completion:
        """One attempt of one request (the batch layer charges and retries it).

        A 200 without a readable ``usage`` is an unknown outcome (the server generated, and
        nobody can say how much); a 200 with ``usage`` is final even when its completion is
        malformed: it comes back with ``finish_reason="error"`` and its tokens charged.
        """
        path, body = self._request(prompt, params)
        data = await self._post_once(path, body)
        try:
            usage = data["usage"]
            pt, ct = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
        except (KeyError, TypeError, ValueError) as e:
            raise OutcomeUnknown(f"a 200 without usable usage: {e!r}") from e
        try:
            return _parse_completion(data, chat=path.endswith("chat/completions"), index=index,
                                     usage=(pt, ct))
        except (KeyError, TypeError, ValueError) as e:
            return Completion(text="", prompt_tokens=pt, completion_tokens=ct,
                              finish_reason="error", index=index,
                              error=f"malformed completion: {e!r}")

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


def _parse_completion(data: dict[str, Any], *, chat: bool, index: int,
                      usage: tuple[int, int]) -> Completion:
    choices = sorted(data["choices"], key=lambda c: int(c.get("index", 0)))
    if not choices:
        raise ValueError("no choices in response")
    texts = [(c["message"].get("content") or "") if chat else c["text"] for c in choices]
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("choice text is not a string")
    reasons = [c.get("finish_reason") for c in choices]
    return Completion(
        text=texts[0] if len(texts) == 1 else texts,
        prompt_tokens=usage[0],
        completion_tokens=usage[1],
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
        pass  # not a JSON error body (a proxy's HTML page, say): its text is the message
    return r.text[:500]
