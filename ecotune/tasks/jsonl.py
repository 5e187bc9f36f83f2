"""A task defined by a JSON-lines file and a prompt template (no code needed).

Each row's fields fill ``prompt_template`` (``str.format`` style, e.g.
``"Q: {question}\\nA:"``); ``reference_field`` holds the gold answer. Scorers:

* ``exact``: stripped completion equals the reference;
* ``contains``: the reference occurs in the completion;
* ``regex``: the reference is a regular expression searched in the completion;
* ``numeric``: the first number in the completion equals the reference (to 1e-6).

An optional few-shot file (same fields) gives examples rendered as template + reference.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ecotune.tasks import data
from ecotune.tasks.base import Instance, Shots, Task, TaskDataError

_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _first_number(text: str) -> float | None:
    m = _NUM.search(text)
    return float(m.group(0).replace(",", "")) if m else None


def _numeric(completion: str, ref: str) -> bool:
    got, want = _first_number(completion), _first_number(ref)
    return got is not None and want is not None and abs(got - want) <= 1e-6 * max(1, abs(want))


SCORERS: dict[str, Callable[[str, str], bool]] = {
    "exact": lambda c, r: c.strip() == r.strip(),
    "contains": lambda c, r: r.strip() in c,
    "regex": lambda c, r: re.search(r, c) is not None,
    "numeric": _numeric,
}


class JsonlTask(Task):
    name = "jsonl"

    def __init__(self, path: str, *, prompt_template: str, reference_field: str,
                 scorer: str = "exact", few_shot_path: str | None = None, id_field: str | None = None,
                 stratum_field: str | None = None, split: str = "test", default_few_shot: int = 0,
                 max_tokens: int = 32, stop: list[str] | None = None, name: str | None = None,
                 variant: str | None = None, limit: int | None = None):
        super().__init__(variant=variant, limit=limit)
        if scorer not in SCORERS:
            raise ValueError(f"unknown scorer {scorer!r}; choose one of {', '.join(SCORERS)}")
        self.name = name or "jsonl"
        self.path, self.split = path, split
        self.template, self.reference_field = prompt_template, reference_field
        self.scorer_name, self._scorer = scorer, SCORERS[scorer]
        self.few_shot_path, self.id_field, self.stratum_field = few_shot_path, id_field, stratum_field
        self.default_few_shot, self.default_max_tokens = default_few_shot, max_tokens
        self.stop_sequences = list(stop) if stop is not None else ["\n"]
        self._fields = tuple(re.findall(r"{(\w+)[^}]*}", prompt_template))
        self._pool = Shots()

    def _render_row(self, row: dict[str, Any], where: str) -> str:
        try:
            return self.template.format(**row)
        except (KeyError, IndexError, ValueError) as e:
            raise TaskDataError(f"{where}: cannot fill prompt_template ({e!r})") from e

    def _load(self) -> list[Instance]:
        required = (*self._fields, self.reference_field) + ((self.id_field,) if self.id_field else ())
        if self.few_shot_path:
            shots = data.read_rows(self.few_shot_path, "train", required)
            self._pool = Shots([
                self._render_row(r, f"{self.few_shot_path}, row {n}") + f" {r[self.reference_field]}"
                for n, r in enumerate(shots, start=1)
            ])
        rows = data.read_rows(self.path, self.split, required)
        out = []
        for n, r in enumerate(rows, start=1):
            self._render_row(r, f"{self.path}, row {n}")  # fail early on bad rows
            iid = str(r[self.id_field]) if self.id_field else f"{self.name}-{n - 1}"
            stratum = str(r[self.stratum_field]) if self.stratum_field and self.stratum_field in r else None
            out.append(Instance(id=iid, data=r, reference=str(r[self.reference_field]), stratum=stratum))
        return out

    def prefix(self, instance: Instance, n_shots: int) -> str:
        self.instances()
        return self._pool.block(n_shots)

    def render(self, instance: Instance) -> str:
        return self._render_row(instance.data, instance.id)

    def score(self, instance: Instance, completion: str) -> float:
        return float(self._scorer(completion, instance.reference))
