"""Live progress of a study: tokens spent of the budget, trials, best score, current trial.

On a terminal a `rich` live panel is redrawn in place; elsewhere (CI logs, pipes) one plain
line per trial is printed instead. Both end with the same summary table.

:class:`StudyProgress` is a :func:`ecotune.study_loop.run_study` callback (``on_trial_end``,
``on_study_end``) plus two hooks the study runner calls: ``on_trial_start`` (wrap the
evaluator with :meth:`StudyProgress.wrap`) and ``on_instance`` (the runner's per-instance hook).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from ecotune.trial import Trial, TrialResult


def config_summary(config: dict[str, Any] | None, width: int = 110) -> str:
    """``temperature=0.12 top_p=0.9 max_tokens=4`` (floats to 3 significant digits)."""
    if not config:
        return "-"
    parts = []
    for k, v in config.items():
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    s = " ".join(parts)
    return s if len(s) <= width else s[: width - 1] + "…"


def _fmt_score(s: float | None) -> str:
    return "-" if s is None else f"{s:.3f}"


class _Wrapped:
    """An evaluator that tells the progress display when a trial starts."""

    def __init__(self, inner: Any, progress: StudyProgress, opt: Any):
        self.inner, self.progress, self.opt = inner, progress, opt

    def evaluate(self, trial: Trial) -> TrialResult:
        self.progress.on_trial_start(self.opt, trial)
        return self.inner.evaluate(trial)


class StudyProgress:
    """Progress display of one study.

    Args:
        budget_tokens: the study's token budget (the bar's total).
        title: shown above the bar (the study name).
        stream: output stream (default stdout).
        live: force the live display on/off; default: on when ``stream`` is a terminal.
    """

    def __init__(self, budget_tokens: int, title: str = "ecotune", stream: TextIO | None = None,
                 live: bool | None = None):
        self.budget = int(budget_tokens)
        self.title = title
        self.stream = stream or sys.stdout
        self.console = Console(file=self.stream, highlight=False, soft_wrap=True)
        self.live_mode = self.console.is_terminal if live is None else live
        self.tokens = 0
        self.reused = 0
        self.trials = 0
        self.best: float | None = None
        self.best_config: dict[str, Any] | None = None
        self.current: Trial | None = None
        self.current_done = 0
        self.current_tokens = 0
        self.t0 = time.monotonic()
        self._live: Live | None = None
        self._bar = Progress(TextColumn("[bold]tokens"), BarColumn(bar_width=None),
                             TextColumn("{task.completed:,.0f} / {task.total:,.0f}"),
                             TextColumn("({task.percentage:>3.0f}%)"), expand=True)
        self._bar_task = self._bar.add_task("tokens", total=max(1, self.budget))

    # ------------------------------------------------------------------ rendering
    def _panel(self) -> Group:
        self._bar.update(self._bar_task, completed=min(self.tokens + self.current_tokens,
                                                       self.budget))
        info = Table.grid(padding=(0, 2))
        info.add_column(style="bold")
        info.add_column()
        info.add_row("study", self.title)
        info.add_row("trials done", str(self.trials))
        info.add_row("best score", _fmt_score(self.best))
        info.add_row("tokens reused", f"{self.reused:,} (not bought again)")
        if self.current is not None:
            info.add_row("current trial",
                         f"#{self.current.id}  r={self.current.fidelity}  "
                         f"{self.current_done}/{self.current.fidelity} instances  "
                         f"limit {self.current.token_limit:,} tokens")
            info.add_row("", config_summary(self.current.config))
        info.add_row("elapsed", f"{time.monotonic() - self.t0:.0f} s")
        return Group(self._bar, info)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._panel())

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    # ------------------------------------------------------------------ hooks
    def start(self, opt: Any = None, resumed: bool = False) -> None:
        """Begin the display (picks up the totals of a resumed study from ``opt``)."""
        if opt is not None:
            self.tokens = int(opt.tokens_used)
            self.reused = int(opt.tokens_reused)
            self.trials = len(opt.state.results)
            self.best_config, self.best = opt.best()
        if self.live_mode:
            self._live = Live(self._panel(), console=self.console, refresh_per_second=4,
                              transient=False)
            self._live.start()
        else:
            what = "resuming" if resumed else "starting"
            self._line(f"[{self.title}] {what}: budget {self.budget:,} tokens"
                       + (f", {self.trials} trials / {self.tokens:,} tokens already done"
                          if resumed else ""))

    def wrap(self, evaluator: Any, opt: Any) -> _Wrapped:
        """The evaluator, reporting each trial's start here."""
        return _Wrapped(evaluator, self, opt)

    def on_trial_start(self, opt: Any, trial: Trial) -> None:
        self.current, self.current_done, self.current_tokens = trial, 0, 0
        self._refresh()

    def on_instance(self, trial: Trial, n_done: int, tokens: int) -> None:
        self.current_done, self.current_tokens = n_done, tokens
        self._refresh()

    def on_trial_end(self, opt: Any, trial: Trial, result: TrialResult) -> None:
        self.tokens = int(opt.tokens_used)
        self.reused = int(opt.tokens_reused)
        self.trials = len(opt.state.results)
        self.best_config, self.best = opt.best()
        self.current, self.current_done, self.current_tokens = None, 0, 0
        if self._live is not None:
            self._refresh()
        else:
            pct = 100.0 * self.tokens / max(1, self.budget)
            self._line(f"trial {trial.id:>3} r={trial.fidelity:<4} {str(result.status):<8} "
                       f"score {_fmt_score(result.score)} ({result.n_evaluated} inst, "
                       f"{result.tokens:,} tok, {result.reused_tokens:,} reused) | "
                       f"used {self.tokens:,}/{self.budget:,} "
                       f"({pct:.0f}%) best {_fmt_score(self.best)} | "
                       f"{config_summary(trial.config, 80)}")

    def on_study_end(self, opt: Any) -> None:
        self.stop()

    def stop(self) -> None:
        if self._live is not None:
            self._refresh()
            self._live.stop()
            self._live = None

    # ------------------------------------------------------------------ summary
    def summary(self, summary: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        """Print the final summary table."""
        self.stop()
        t = Table(title=f"EcoTune study {self.title}", show_header=False, title_justify="left")
        t.add_column(style="bold")
        t.add_column()
        t.add_row("optimizer", str(summary.get("optimizer")))
        t.add_row("trials", str(summary.get("trials")))
        used, budget = summary.get("tokens_used", 0), summary.get("budget_tokens", self.budget)
        t.add_row("tokens", f"{used:,} of {budget:,} ({100.0 * used / max(1, budget):.1f}%)")
        t.add_row("tokens reused", f"{summary.get('tokens_reused', 0):,} "
                                   "(cached answers and kept instances: not bought again)")
        t.add_row("best score", _fmt_score(summary.get("best_score")))
        t.add_row("best config", config_summary(summary.get("best_config"), 400))
        t.add_row("stop reason", str(summary.get("stop_reason")))
        for k, v in (extra or {}).items():
            t.add_row(k, str(v))
        t.add_row("wall time", f"{time.monotonic() - self.t0:.0f} s")
        self.console.print(t)
