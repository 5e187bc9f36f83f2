import numpy as np
import pytest

from ecotune.decoding import SamplingParams
from ecotune.space import SearchSpace, SearchSpaceError, default_llm_space, helm_default


def test_from_dict_roundtrip_and_types():
    space = SearchSpace.from_dict({
        "temperature": {"type": "float", "low": 0.0, "high": 1.0},
        "max_tokens": {"type": "int", "low": 1, "high": 600, "log": True},
        "stop": {"type": "categorical", "choices": ["a", "b", "c"]},
    })
    rng = np.random.default_rng(0)
    for cfg in space.sample(rng, 200):
        assert 0.0 <= cfg["temperature"] <= 1.0
        assert isinstance(cfg["max_tokens"], int) and 1 <= cfg["max_tokens"] <= 600
        assert cfg["stop"] in ("a", "b", "c")
        assert space.decode(space.encode(cfg)) == pytest.approx(cfg)


def test_every_integer_reachable_on_log_scale():
    p = default_llm_space().params["max_tokens"]
    assert [p.from_unit(p.to_unit(m)) for m in range(1, 601)] == list(range(1, 601))


def test_from_yaml_file(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("temperature: {type: float, low: 0.0, high: 1.0}\nfew_shot: {type: int, low: 0, high: 5}\n")
    assert SearchSpace.from_yaml(f).names == ["temperature", "few_shot"]


@pytest.mark.parametrize("spec, message", [
    ({}, "empty"),
    ({"t": {"type": "float", "low": 2.0, "high": 1.0}}, "low (2.0) must be <= high (1.0)"),
    ({"t": {"type": "gaussian", "low": 0, "high": 1}}, "does not match any of the expected tags"),
    ({"t": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "log scale needs low > 0"),
    ({"t": {"type": "categorical", "choices": []}}, "at least 1"),
    ({"t": {"type": "float", "low": 0, "high": 1, "condition": {"param": "x", "values": [1]}}},
     "unknown parameter 'x'"),
    ({"t": {"type": "float", "low": 0, "high": 1, "bogus": 3}}, "Extra inputs are not permitted"),
])
def test_invalid_spaces_are_rejected_clearly(spec, message):
    with pytest.raises(SearchSpaceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchSpace.from_dict(spec)


def test_missing_yaml_file_is_clear():
    with pytest.raises(SearchSpaceError, match="not found"):
        SearchSpace.from_yaml("/nonexistent/space.yaml")


def test_conditional_parameter_only_when_active():
    space = SearchSpace.from_dict({
        "sampling": {"type": "categorical", "choices": ["greedy", "sample"]},
        "temperature": {"type": "float", "low": 0.1, "high": 1.0,
                        "condition": {"param": "sampling", "values": ["sample"]}},
    })
    rng = np.random.default_rng(1)
    for cfg in space.sample(rng, 100):
        assert ("temperature" in cfg) == (cfg["sampling"] == "sample")


def test_default_llm_space_matches_paper():
    space = default_llm_space(penalties=True, few_shot=5)
    p = space.params
    assert p["decoding"].choices == ["greedy", "sample"]
    assert (p["temperature"].low, p["temperature"].high) == (0.05, 1.0)  # > 0: sampled
    assert (p["repetition_penalty"].low, p["repetition_penalty"].high) == (1.0, 1.5)
    assert (p["length_penalty"].low, p["length_penalty"].high) == (0.8, 1.2)
    assert (p["max_tokens"].low, p["max_tokens"].high) == (1, 600)
    assert {"presence_penalty", "frequency_penalty", "few_shot", "top_k", "min_p"} <= set(p)
    helm = helm_default(space, max_tokens=5)
    assert helm["decoding"] == "greedy" and helm["max_tokens"] == 5 and helm["few_shot"] == 5
    # greedy: the sampling knobs are inactive, so they are not part of the config at all
    assert not {"temperature", "top_p", "top_k", "min_p"} & set(helm)


def test_greedy_configs_are_one_canonical_config():
    """Every greedy config of the paper's space is the same point, the same config and the
    same request, whatever the (inert) sampling knobs said."""
    space = default_llm_space(max_tokens=(2, 8))
    rng = np.random.default_rng(0)
    greedy = [c for c in space.sample(rng, 200) if c["decoding"] == "greedy"]
    assert len(greedy) > 50
    for c in greedy[:20]:
        noisy = {**c, "temperature": 0.7, "top_p": 0.2, "top_k": 3, "min_p": 0.1}
        assert space.canonical(noisy) == c
        assert (space.encode(noisy) == space.encode(c)).all()
        assert SamplingParams.from_config(noisy) == SamplingParams.from_config(c)
        assert SamplingParams.from_config(c).greedy


def test_gt_condition_marks_settings_inert_at_temperature_zero():
    space = SearchSpace.from_dict({
        "temperature": {"type": "float", "low": 0.0, "high": 1.0},
        "top_p": {"type": "float", "low": 0.1, "high": 1.0,
                  "condition": {"param": "temperature", "gt": 0}},
        "max_tokens": {"type": "int", "low": 1, "high": 8},
    })
    a = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 4}
    b = {"temperature": 0.0, "top_p": 0.999, "max_tokens": 4}
    assert space.canonical(a) == space.canonical(b) == {"temperature": 0.0, "max_tokens": 4}
    assert space.canonical({**a, "temperature": 0.3}) == {**a, "temperature": 0.3}
    # a temperature-0 request is the same whatever an unconditioned top_p says
    assert SamplingParams.from_config(a) == SamplingParams.from_config(b)
    assert SamplingParams.from_config({**a, "temperature": 0.3}).top_p == 1.0
    with pytest.raises(SearchSpaceError, match="exactly one of 'values' or 'gt'"):
        SearchSpace.from_dict({"t": {"type": "float", "low": 0, "high": 1},
                               "p": {"type": "float", "low": 0, "high": 1,
                                     "condition": {"param": "t"}}})
