"""OpenAIEngine against a real local vLLM (CPU) serving the embedded SmolLM2-135M model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecotune.decoding import SamplingParams
from ecotune.engines import EngineError, OpenAIEngine
from ecotune.process import free_port
from ecotune.testing.vllm import MODEL

pytestmark = pytest.mark.integration

FEW_SHOT = "Q: 2+3=\nA: 5\nQ: 7+1=\nA: 8\nQ: 4+4=\nA: 8\n"
PROMPTS = [f"{FEW_SHOT}Q: {a}+{b}=\nA:" for a, b in [(1, 2), (10, 5), (3, 9), (12, 12)]]


@pytest.fixture(scope="module")
def eng(vllm_server: str) -> Iterator[OpenAIEngine]:
    e = OpenAIEngine(vllm_server, MODEL, send_seed=False, max_concurrency=4)
    yield e
    e.close()


def test_check_passes(eng: OpenAIEngine) -> None:
    eng.check()


def test_wrong_model_is_reported(vllm_server: str) -> None:
    with pytest.raises(EngineError, match=rf"model 'no-such-model' not served .*{MODEL}"):
        OpenAIEngine(vllm_server, "no-such-model").check()


def test_unreachable_endpoint_is_reported() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EngineError, match=f"endpoint {dead} unreachable"):
        OpenAIEngine(dead, MODEL).check()
    with OpenAIEngine(dead, MODEL, max_retries=1, backoff_base_s=0.01) as e:
        with pytest.raises(EngineError, match="after 2 attempts"):
            e.generate(["x"], SamplingParams())


def test_usage_matches_tokenize_exactly(eng: OpenAIEngine) -> None:
    chats = [[{"role": "system", "content": "Answer with a number."},
              {"role": "user", "content": "What is 2+2?"}]]  # fmt: skip
    prompts = [*PROMPTS, "Hello", *chats]
    counts = eng.count_prompt_tokens(prompts)
    out = eng.generate(prompts, SamplingParams(max_tokens=3))
    assert [c.prompt_tokens for c in out] == counts
    assert all(0 < c.completion_tokens <= 3 for c in out)
    assert counts[0] > 30 and counts[4] < 5


def test_greedy_is_deterministic_and_max_tokens_bounds_output(eng: OpenAIEngine) -> None:
    p = SamplingParams(max_tokens=4)
    a = eng.generate(PROMPTS[:2], p)
    b = eng.generate(PROMPTS[:2], p)
    assert [c.text for c in a] == [c.text for c in b]
    long = eng.complete_one("Count: 1, 2, 3, 4,", SamplingParams(max_tokens=7))
    assert long.completion_tokens == 7 and long.finish_reason == "length"


def test_every_sampling_param_is_accepted(eng: OpenAIEngine) -> None:
    p = SamplingParams(temperature=0.9, top_p=0.8, top_k=20, min_p=0.05, max_tokens=6,
                       repetition_penalty=1.2, length_penalty=0.8, presence_penalty=0.5,
                       frequency_penalty=-0.5, n=2, stop=["\n"], seed=1)  # fmt: skip
    (c,) = eng.generate([PROMPTS[0]], p)  # seed is not sent: send_seed=False (CPU build)
    assert isinstance(c.text, list) and len(c.text) == 2
    assert 0 < c.completion_tokens <= 12
    assert c.prompt_tokens == eng.count_prompt_tokens([PROMPTS[0]])[0]
    (chat,) = eng.generate([[{"role": "user", "content": "Say hi."}]], p)
    assert len(chat.texts) == 2


def test_generate_iter_respects_a_token_limit(eng: OpenAIEngine) -> None:
    """Against real vLLM: room for three worst cases, so exactly three requests go out, and
    the ledger settles to the usage vLLM reported."""
    from ecotune.ledger import TokenLedger

    p = SamplingParams(max_tokens=4)
    count = eng.count_prompt_tokens([PROMPTS[0]])[0]
    ledger = TokenLedger(limit=3 * (count + p.max_tokens))
    got = list(eng.generate_iter([PROMPTS[0]] * 10, p, max_in_flight=2, ledger=ledger,
                                 prompt_tokens=[count] * 10))
    assert len(got) == 3 and all(c.prompt_tokens == count for c in got)
    assert ledger.charged == ledger.settled == sum(c.tokens for c in got) <= ledger.limit


def test_bad_request_is_not_retried(eng: OpenAIEngine) -> None:
    t = time.monotonic()
    with pytest.raises(EngineError, match="HTTP 400"):
        eng.generate(["x"], SamplingParams(max_tokens=100_000))
    assert time.monotonic() - t < 5


def test_prepare_model_is_idempotent() -> None:
    from ecotune.serve_local import MARKER, prepare_model

    d = prepare_model()
    stamp = (d / MARKER).stat().st_mtime_ns
    t = time.monotonic()
    assert prepare_model() == d
    assert time.monotonic() - t < 10 and (d / MARKER).stat().st_mtime_ns == stamp
    assert not any("quantization" in k for k in (d / "config.json").read_text().split('"'))


def test_local_server_failure_reports_the_log(tmp_path: Path) -> None:
    from ecotune.serve_local import LocalVLLM, ServeError

    (tmp_path / "model").mkdir()
    server = LocalVLLM(tmp_path / "model", log_path=tmp_path / "vllm.log", startup_timeout_s=120)
    with pytest.raises(ServeError, match="vLLM exited with code"):
        server.start()
    assert server.proc is None and (tmp_path / "vllm.log").stat().st_size > 0
