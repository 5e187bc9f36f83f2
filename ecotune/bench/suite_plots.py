"""The suite's anytime curves: the incumbent's true score along a run's tokens, and one
plot of mean simple regret against tokens per problem (``<out>/<problem>.png``)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np


def score_at(run: dict[str, Any], tokens: float) -> float:
    """The incumbent's true score once ``tokens`` were spent (nan before the first)."""
    s = float("nan")
    for t, v in run["trajectory"]:
        if t > tokens:
            break
        s = v
    return s


def slug(p: str) -> str:
    """A problem name as a file name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in p)


def plot_regret(out: Path, problem: str, runs: list[dict[str, Any]]) -> None:
    """Mean simple regret (optimum − incumbent's true score) against tokens, per method."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    budget = max(r["budget"] for r in runs)
    grid = np.linspace(0, budget, 101)
    for m in sorted({r["method"] for r in runs}):
        curves = np.array([[r["oracle"] - score_at(r, g) for g in grid]
                           for r in runs if r["method"] == m])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ax.plot(grid, np.nanmean(curves, axis=0), label=m, lw=2 if m == "ecotune" else 1)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("tokens")
    ax.set_ylabel("simple regret (true score)")
    ax.set_title(problem)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / f"{slug(problem)}.png", dpi=90)
