"""Paired tests behind champion promotion, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from ecotune.tracking.stats import is_binary, mcnemar_exact, paired_bootstrap, paired_test


def test_mcnemar_known_value() -> None:
    # b=10 only-challenger wins, c=2 only-champion wins: P(X>=10 | 12, 1/2) = 79/4096
    chall = [1] * 10 + [0] * 2 + [1] * 5 + [0] * 3
    champ = [0] * 10 + [1] * 2 + [1] * 5 + [0] * 3
    r = mcnemar_exact(chall, champ)
    assert r.p_value == pytest.approx(79 / 4096)
    assert (r.details["b"], r.details["c"], r.n) == (10, 2, 20)
    assert r.challenger_score == pytest.approx(15 / 20)
    assert r.champion_score == pytest.approx(7 / 20)


def test_mcnemar_one_sided_and_degenerate() -> None:
    assert mcnemar_exact([1, 1, 0], [1, 1, 0]).p_value == 1.0  # no discordant pairs
    # challenger worse: b=0, c=3 -> P(X>=0) = 1
    assert mcnemar_exact([0, 0, 0], [1, 1, 1]).p_value == 1.0
    # 5 wins, 0 losses: 1/32
    assert mcnemar_exact([1] * 5, [0] * 5).p_value == pytest.approx(1 / 32)


def test_mcnemar_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        mcnemar_exact([0.5, 1], [0, 1])
    with pytest.raises(ValueError):
        mcnemar_exact([1, 0], [1])
    with pytest.raises(ValueError):
        mcnemar_exact([], [])


def test_bootstrap_clear_win_hits_floor() -> None:
    # every resampled null mean of identical differences is 0 < observed 0.1
    r = paired_bootstrap([1.0] * 30, [0.9] * 30, n_resamples=999)
    assert r.p_value == pytest.approx(1 / 1000)
    assert r.details["mean_diff"] == pytest.approx(0.1)


def test_bootstrap_no_gain_is_one_and_noise_is_large() -> None:
    assert paired_bootstrap([0.5] * 10, [0.5] * 10).p_value == 1.0
    assert paired_bootstrap([0.4] * 10, [0.5] * 10).p_value == 1.0
    chall = [0.6, 0.4] * 10
    champ = [0.4, 0.6] * 10 + []  # mean diff 0
    assert paired_bootstrap(chall, champ).p_value == 1.0
    # a tiny gain amid noise is not significant
    chall2 = [0.9, 0.1] * 10 + [0.55]
    champ2 = [0.1, 0.9] * 10 + [0.5]
    assert paired_bootstrap(chall2, champ2, n_resamples=2000).p_value > 0.2


def test_bootstrap_is_seeded() -> None:
    a = [0.7, 0.2, 0.9, 0.4, 0.8, 0.6, 0.3, 0.9]
    b = [0.5, 0.3, 0.6, 0.4, 0.7, 0.2, 0.4, 0.6]
    assert paired_bootstrap(a, b, seed=3).p_value == paired_bootstrap(a, b, seed=3).p_value
    assert 0 < paired_bootstrap(a, b).p_value < 0.1


def test_paired_test_dispatch() -> None:
    assert paired_test([1, 0], [0, 0], "mcnemar").test == "mcnemar"
    assert paired_test([0.5, 0.7], [0.2, 0.1], "mcnemar").test == "bootstrap"  # not binary
    assert paired_test([1, 0], [0, 0], "bootstrap").test == "bootstrap"
    with pytest.raises(ValueError):
        paired_test([1], [0], "ttest")  # type: ignore[arg-type]
    assert is_binary([0, 1.0, 1]) and not is_binary([0, 0.5])
    assert not math.isnan(paired_test([1] * 4, [0] * 4).p_value)
