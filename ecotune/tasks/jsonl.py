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
from typing import Any, Literal

from pydantic import Field, field_validator

from ecotune.tasks import data
from ecotune.tasks.base import Instance, Shots, Task, TaskDataError, TaskOptions

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


class JsonlOptions(TaskOptions):
    """Options of ``jsonl``: the file, how a row becomes a prompt, how it is scored."""

    name: Literal["jsonl"] = "jsonl"
    data_path: str = Field(description="JSON-lines file (local, s3://) or hf:// dataset")
    prompt_template: str = Field(description="str.format template over a row's fields")
    reference_field: str = Field(description="the field holding the gold answer")
    scorer: str = Field("exact", description="exact, contains, regex or numeric")
    few_shot_path: str | None = Field(None, description="rows of few-shot examples")
    few_shot: int = Field(0, ge=0, description="default few-shot count")
    id_field: str | None = Field(None, description="field of instance ids (default: row number)")
    stratum_field: str | None = Field(None, description="field of the subsets' strata")
    split: str = Field("test", description="split of an hf:// dataset")
    max_tokens: int = Field(32, ge=1, description="default max_tokens")
    stop: list[str] | None = Field(None, description="stop sequences (default a newline)")
    task_name: str | None = Field(None, description="name used for ids and storage")

    @field_validator("scorer")
    @classmethod
    def _known_scorer(cls, v: str) -> str:
        if v not in SCORERS:
            raise ValueError(f"unknown scorer {v!r}; choose one of {', '.join(SCORERS)}")
        return v


class JsonlTask(Task):
    name = "jsonl"
    Options = JsonlOptions

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

    @classmethod
    def from_options(cls, options: JsonlOptions) -> JsonlTask:
        o = options
        return cls(o.data_path, prompt_template=o.prompt_template,
                   reference_field=o.reference_field, scorer=o.scorer,
                   few_shot_path=o.few_shot_path, id_field=o.id_field,
                   stratum_field=o.stratum_field, split=o.split, default_few_shot=o.few_shot,
                   max_tokens=o.max_tokens, stop=o.stop, name=o.task_name, limit=o.limit)

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
