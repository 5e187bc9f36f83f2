"""``gsm8k_calc``: one-operation sums from GSM8K's calculator annotations, asked few-shot.

GSM8K solutions carry calculator annotations like ``<<48/2=24>>``. :func:`build_gsm8k_calc`
turns the single-operation ones on small integers into short questions ("What is 48
divided by 2?" -> "24"): a short generative task on which the embedded 135M model shows
real signal, with the operator as the stratum. It is the benchmark's second recorded task
(``docs/benchmarks.md``); the built files ship in ``benchmarks/data`` and are rebuilt from
GSM8K only when missing. Prompts, ids and scores are those of the ``jsonl`` task with the
fixed settings below (a test pins them: recorded tables depend on them byte for byte).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from ecotune.tasks import data
from ecotune.tasks.base import Instance, TaskOptions
from ecotune.tasks.jsonl import JsonlTask

#: Where the constructed GSM8K-calculator data set is written (small, shipped).
CALC_DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data"
TEST_FILE, SHOTS_FILE = "gsm8k_calc_test.jsonl", "gsm8k_calc_train.jsonl"
TEMPLATE = "Question: What is {question}?\nAnswer:"

_CALC = re.compile(r"<<([^>=]+)=([^>]+)>>")
_SIMPLE = re.compile(r"^(\d{1,3})([+\-*/])(\d{1,3})$")


def build_gsm8k_calc(gsm8k_dir: str | Path, out_dir: str | Path = CALC_DATA) -> tuple[Path, Path]:
    """Build the ``gsm8k_calc`` task's data from GSM8K's calculator annotations.

    Every GSM8K solution carries annotations like ``<<48/2=24>>``. The single-operation
    ones on integers of at most three digits with an integer result become short questions
    ("What is 48 / 2?" -> "24"): the test split gives the instances (deduplicated), the train
    split the few-shot pool. Returns ``(test_path, shots_path)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, limit in (("test", 400), ("train", 8)):
        seen: set[str] = set()
        rows = []
        for line in (Path(gsm8k_dir) / f"{split}.jsonl").read_text().splitlines():
            for expr, res in _CALC.findall(json.loads(line)["answer"]):
                m = _SIMPLE.match(expr.replace(" ", ""))
                if not m:
                    continue
                a, op, b = m.groups()
                try:
                    val = float(res)
                except ValueError:
                    continue
                if val != int(val) or val < 0:
                    continue
                key = f"{a}{op}{b}"
                if key in seen:
                    continue
                seen.add(key)
                sym = {"*": "times", "/": "divided by", "+": "plus", "-": "minus"}[op]
                rows.append({"id": f"calc-{split}-{len(rows)}", "question": f"{a} {sym} {b}",
                             "answer": str(int(val)), "op": op})
                if len(rows) >= limit:
                    break
            if len(rows) >= limit:
                break
        p = out / f"gsm8k_calc_{split}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(p)
    return paths[0], paths[1]


class GSM8KCalcOptions(TaskOptions):
    """Options of ``gsm8k_calc``."""

    name: Literal["gsm8k_calc"] = "gsm8k_calc"
    data_path: str | None = Field(None, description=f"local folder holding {TEST_FILE} and "
                                  f"{SHOTS_FILE}; default the files shipped in benchmarks/data")
    source_path: str | None = Field(None, description="GSM8K folder (test.jsonl, train.jsonl) "
                                    "they are built from when missing; default <data dir>/gsm8k")


class GSM8KCalc(JsonlTask):
    """The questions of :func:`build_gsm8k_calc`, 3-shot by default, scored numerically."""

    name = "gsm8k_calc"
    Options = GSM8KCalcOptions

    def __init__(self, folder: str | Path = CALC_DATA, *, source: str | Path | None = None,
                 limit: int | None = None):
        self.folder, self.source = Path(folder), source
        super().__init__(
            str(self.folder / TEST_FILE), few_shot_path=str(self.folder / SHOTS_FILE),
            prompt_template=TEMPLATE, reference_field="answer", scorer="numeric",
            id_field="id", stratum_field="op", default_few_shot=3, max_tokens=8, stop=["\n"],
            name="gsm8k_calc", limit=limit)

    @classmethod
    def from_options(cls, options: GSM8KCalcOptions) -> GSM8KCalc:
        return cls(options.data_path or CALC_DATA, source=options.source_path,
                   limit=options.limit)

    def _load(self) -> list[Instance]:
        if not (self.folder / TEST_FILE).exists():
            source = self.source or data.join(data.default_data_dir(), "gsm8k")
            build_gsm8k_calc(source, self.folder)
        return super()._load()
