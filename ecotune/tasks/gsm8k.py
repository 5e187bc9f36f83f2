"""GSM8K grade-school maths with chain-of-thought few-shot (HELM style).

Few-shot exemplars are the first rows of the train split, their worked solutions cleaned of
calculator annotations (``<<48/2=24>>``) and ended with "The answer is N." The score is an
exact numeric match of the completion's final answer with the number after ``####``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from ecotune.tasks import data
from ecotune.tasks.base import Instance, Shots, Task, TaskDataError, TaskOptions

_CALC = re.compile(r"<<[^>]*>>")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_ANSWER_IS = re.compile(r"answer is\s*:?\s*\$?(-?[\d,]*\.?\d+)", re.IGNORECASE)


def final_number(answer: str, where: str = "") -> str:
    """The gold number after ``####`` in a GSM8K solution."""
    if "####" not in answer:
        raise TaskDataError(f"{where}: answer has no '#### <number>' line")
    return normalize_number(answer.rsplit("####", 1)[1])


def normalize_number(text: str) -> str:
    """'1,234.50' -> '1234.5'; '$7' -> '7'; keeps the text if it is not a number."""
    s = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        v = float(s)
    except ValueError:
        return s
    return str(int(v)) if v == int(v) else repr(v)


def extract_answer(completion: str) -> str | None:
    """The model's final number: after "The answer is", else the last number written."""
    m = _ANSWER_IS.search(completion)
    if m:
        return normalize_number(m.group(1))
    nums = _NUMBER.findall(completion)
    return normalize_number(nums[-1]) if nums else None


def solution_text(answer: str) -> str:
    """A train solution as chain-of-thought text ending in "The answer is N."."""
    body, _, final = answer.rpartition("####")
    body = _CALC.sub("", body).strip()
    return f"{body}\nThe answer is {final.strip()}."


class GSM8KOptions(TaskOptions):
    """Options of ``gsm8k``."""

    name: Literal["gsm8k"] = "gsm8k"
    data_path: str | None = Field(None, description="folder (or s3:// prefix) holding "
                                  "<split>.jsonl and train.jsonl; default <data dir>/gsm8k")
    split: str = Field("test", description="the split evaluated: test or train")


class GSM8K(Task):
    name = "gsm8k"
    Options = GSM8KOptions
    default_few_shot = 5
    default_max_tokens = 400
    stop_sequences = ["\n\n", "\nQ:"]
    max_shots = 8

    def __init__(self, root: str, *, split: str = "test", variant: str | None = None,
                 limit: int | None = None):
        super().__init__(variant=variant, limit=limit)
        self.root = root
        self.split = split
        self._pool = Shots()

    @classmethod
    def from_options(cls, options: GSM8KOptions) -> GSM8K:
        return cls(data.task_path(options.data_path, "gsm8k"), split=options.split,
                   limit=options.limit)

    def _load(self) -> list[Instance]:
        train = data.join(self.root, "train.jsonl")
        shots = data.read_jsonl(train, ("question", "answer"))[: self.max_shots]
        self._pool = Shots([f"Q: {r['question']}\nA: {solution_text(r['answer'])}" for r in shots])
        path = data.join(self.root, f"{self.split}.jsonl")
        rows = data.read_jsonl(path, ("question", "answer"))
        return [
            Instance(
                id=f"gsm8k-{n}",
                data={"question": r["question"]},
                reference=final_number(r["answer"], f"{path}, row {n + 1}"),
            )
            for n, r in enumerate(rows)
        ]

    def prefix(self, instance: Instance, n_shots: int) -> str:
        self.instances()
        return self._pool.block(n_shots)

    def render(self, instance: Instance) -> str:
        return f"Q: {instance.data['question']}\nA:"

    def score(self, instance: Instance, completion: str) -> float:
        return float(extract_answer(completion) == instance.reference)
