"""The in-process fake engine (deterministic answers, scripted failures) and the engine
factory (``make_engine``: config validation, API keys from the environment)."""

from __future__ import annotations

import pytest

from ecotune.decoding import SamplingParams
from ecotune.engines import EngineConfig, EngineError, FakeEngine, OpenAIEngine, make_engine


def test_fake_engine_is_deterministic_and_counts_words() -> None:
    eng = FakeEngine(answers={"q one": "the answer is 4"}, default="no")
    c1, c2 = eng.generate(["q one", "other prompt here"], SamplingParams(max_tokens=2))
    assert (c1.text, c1.prompt_tokens, c1.completion_tokens, c1.finish_reason) == (
        "the answer", 2, 2, "length")  # fmt: skip
    assert (c2.text, c2.prompt_tokens, c2.completion_tokens, c2.finish_reason) == (
        "no",
        3,
        1,
        "stop",
    )
    assert eng.count_prompt_tokens(["a b", [{"role": "user", "content": "c d e"}]]) == [2, 3]
    cn = eng.complete_one("q one", SamplingParams(n=2, max_tokens=8))
    assert cn.text == ["the answer is 4"] * 2 and cn.completion_tokens == 8
    fn = FakeEngine(answers=lambda p, sp: "hot" if sp.temperature > 0.5 else "cold")
    assert fn.complete_one("x", SamplingParams(temperature=1.0)).text == "hot"
    eng.check()
    eng.close()


def test_fake_engine_failure_and_iter() -> None:
    from ecotune.ledger import TokenLedger

    eng = FakeEngine(default="a b", fail_after=2)
    ledger = TokenLedger(limit=2 * (1 + 16))  # room for exactly two worst cases
    got = list(eng.generate_iter(["x"] * 5, SamplingParams(), ledger=ledger,
                                 prompt_tokens=[1] * 5))
    assert sorted(c.index for c in got) == [0, 1] and ledger.settled == 2 * 3
    with pytest.raises(EngineError, match="fake engine failure"):
        eng.generate(["x"], SamplingParams())
    # a failure is an unknown outcome: its worst case stays charged
    failing = TokenLedger()
    with pytest.raises(EngineError, match="fake engine failure"):
        eng.complete_one("x", SamplingParams(max_tokens=4), ledger=failing, prompt_tokens=1)
    assert failing.kept == 5 and failing.charged == 5


def test_make_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = make_engine({"base_url": "http://h:1/v1", "model": "x", "send_seed": False,
                       "max_concurrency": 4})  # fmt: skip
    assert isinstance(eng, OpenAIEngine)
    assert (eng.base_url, eng.send_seed, eng.max_concurrency) == ("http://h:1", False, 4)
    assert isinstance(make_engine(EngineConfig(base_url="fake://", model="f")), FakeEngine)
    with pytest.raises(ValueError, match="extra"):
        make_engine({"base_url": "http://h", "model": "x", "temprature": 1})
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(EngineError, match="MY_KEY"):
        make_engine({"base_url": "http://h", "model": "x", "api_key_env": "MY_KEY"})
    monkeypatch.setenv("MY_KEY", "k")
    assert (
        make_engine({"base_url": "http://h", "model": "x", "api_key_env": "MY_KEY"}).api_key == "k"
    )
