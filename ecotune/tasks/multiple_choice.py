"""Letter-answer multiple-choice tasks: MMLU, OpenBookQA, ARC and MedQA (HELM style).

The prompt is HELM's multiple-choice-joint format::

    The following are multiple choice questions (with answers) about <topic>.

    Question: ...
    A. ...
    B. ...
    Answer: B

    Question: ...
    Answer:

and the completion is scored by exact match on the answer letter (``max_tokens=1``).
ARC, OpenBookQA and MedQA have only a test split here, so their first
``FEWSHOT_POOL`` rows are held out as the fixed few-shot pool and are not instances.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, ClassVar, Literal

from pydantic import Field

from ecotune.tasks import data
from ecotune.tasks.base import Instance, Shots, Task, TaskDataError, TaskOptions

LETTERS = "ABCDEFGHIJ"
FEWSHOT_POOL = 5
_ANSWER = re.compile(r"^\s*\(?([A-J])(?:[\s.):,]|$)")


def format_question(question: str, choices: list[str]) -> str:
    lines = [f"Question: {question.strip()}"]
    lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return "\n".join(lines) + "\nAnswer:"


def parse_letter(completion: str) -> str | None:
    """The answer letter at the start of a completion (``B``, `` B.``, ``(B)``), else None."""
    m = _ANSWER.match(completion)
    return m.group(1) if m else None


class MultipleChoiceTask(Task):
    """Base for letter-answer tasks. Instance data: ``question``, ``choices``, ``answer``."""

    default_few_shot = 5
    default_max_tokens = 1
    stop_sequences = ["\n"]
    topic = "general knowledge"

    def _shots(self, instance: Instance) -> Shots:
        raise NotImplementedError

    def header(self, instance: Instance) -> str:
        return f"The following are multiple choice questions (with answers) about {self.topic}.\n\n"

    def prefix(self, instance: Instance, n_shots: int) -> str:
        return self.header(instance) + self._shots(instance).block(n_shots)

    def render(self, instance: Instance) -> str:
        return format_question(instance.data["question"], instance.data["choices"])

    def score(self, instance: Instance, completion: str) -> float:
        return float(parse_letter(completion) == instance.reference)

    @staticmethod
    def shot_text(question: str, choices: list[str], answer: str) -> str:
        return f"{format_question(question, choices)} {answer}"


class PooledOptions(TaskOptions):
    """Options of the test-only sets (``openbookqa``, ``medqa``, ``arc_*``)."""

    data_path: str | None = Field(None, description="JSON-lines file (local, s3://) or "
                                  "hf:// dataset; default the task's file in the data dir")


class OpenBookQAOptions(PooledOptions):
    name: Literal["openbookqa"] = "openbookqa"


class ARCOptions(PooledOptions):
    name: Literal["arc_easy", "arc_challenge"]


class MedQAOptions(PooledOptions):
    name: Literal["medqa"] = "medqa"


class MMLUOptions(TaskOptions):
    """Options of ``mmlu``."""

    name: Literal["mmlu"] = "mmlu"
    data_path: str | None = Field(None, description="MMLU folder (data/dev, data/<split>; "
                                  "local or s3://); default <data dir>/mmlu")
    subjects: list[str] | None = Field(None, description="subjects to keep (default all 57)")
    split: str = Field("test", description="the split evaluated: test or val")


class _PooledTask(MultipleChoiceTask):
    """A test-only data set: the first rows are the few-shot pool, the rest instances."""

    required: tuple[str, ...] = ()
    #: the data file, under the data folder, when a config gives no ``data_path``
    default_file: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: str, *, variant: str | None = None, limit: int | None = None):
        super().__init__(variant=variant, limit=limit)
        self.path = path
        self._pool = Shots()

    @classmethod
    def from_options(cls, options: PooledOptions) -> _PooledTask:
        return cls(data.task_path(options.data_path, *cls.default_file), limit=options.limit)

    def _convert(self, row: dict[str, Any], where: str) -> tuple[str, list[str], str]:
        raise NotImplementedError

    def _load(self) -> list[Instance]:
        rows = data.read_rows(self.path, required=self.required)
        items = []
        for n, row in enumerate(rows, start=1):
            q, choices, ans = self._convert(row, f"{self.path}, row {n}")
            items.append((n - 1, q, choices, ans))
        if len(items) <= FEWSHOT_POOL:
            raise TaskDataError(f"{self.path}: needs more than {FEWSHOT_POOL} rows")
        self._pool = Shots([self.shot_text(q, c, a) for _, q, c, a in items[:FEWSHOT_POOL]])
        return [
            Instance(id=f"{self.key}-{i}", data={"question": q, "choices": c}, reference=a)
            for i, q, c, a in items[FEWSHOT_POOL:]
        ]

    def _shots(self, instance: Instance) -> Shots:
        self.instances()
        return self._pool


def _gold_index(row: dict[str, Any], where: str) -> tuple[str, list[str], str]:
    choices, gold = row["choices"], row["gold"]
    if not isinstance(choices, list) or not isinstance(gold, int) or not 0 <= gold < len(choices):
        raise TaskDataError(f"{where}: 'gold' must index into 'choices'")
    question = str(row["query"]).removeprefix("Question:").strip()
    return question, [str(c) for c in choices], LETTERS[gold]


class OpenBookQA(_PooledTask):
    name = "openbookqa"
    Options = OpenBookQAOptions
    topic = "elementary science"
    required = ("query", "choices", "gold")
    default_file = ("openbookqa", "openbook_qa.jsonl")
    _convert = staticmethod(_gold_index)  # type: ignore[assignment]


class ARC(_PooledTask):
    """ARC-Easy (``variant="easy"``) or ARC-Challenge (``variant="challenge"``)."""

    name = "arc"
    Options = ARCOptions
    topic = "science"
    required = ("query", "choices", "gold")
    _convert = staticmethod(_gold_index)  # type: ignore[assignment]

    @classmethod
    def from_options(cls, options: ARCOptions) -> ARC:
        """``arc_easy`` / ``arc_challenge``: the level is the variant and names the file."""
        level = options.name.removeprefix("arc_")
        return cls(data.task_path(options.data_path, "arc", f"arc_{level}.jsonl"),
                   variant=level, limit=options.limit)


class MedQA(_PooledTask):
    """MedQA USMLE 4-option; gold letter from ``answer_idx``."""

    name = "medqa"
    Options = MedQAOptions
    topic = "medicine"
    required = ("question", "options", "answer_idx")
    default_file = ("medqa", "phrases_no_exclude_test.jsonl")

    def _convert(self, row: dict[str, Any], where: str) -> tuple[str, list[str], str]:
        opts = row["options"]
        if not isinstance(opts, dict) or sorted(opts) != list(LETTERS[: len(opts)]):
            raise TaskDataError(f"{where}: 'options' must map A, B, C, ... to text")
        if row["answer_idx"] not in opts:
            raise TaskDataError(f"{where}: 'answer_idx' {row['answer_idx']!r} not an option")
        return str(row["question"]), [str(opts[k]) for k in sorted(opts)], row["answer_idx"]


class MMLU(MultipleChoiceTask):
    """MMLU: 57 subjects, 5-shot from each subject's dev split; stratum = subject."""

    name = "mmlu"
    Options = MMLUOptions

    def __init__(
        self,
        root: str,
        *,
        subjects: list[str] | None = None,
        split: str = "test",
        variant: str | None = None,
        limit: int | None = None,
    ):
        super().__init__(variant=variant, limit=limit)
        self.root = root
        self.split = split
        self.requested = subjects
        self._shot_pools: dict[str, Shots] = {}

    @classmethod
    def from_options(cls, options: MMLUOptions) -> MMLU:
        """A subject subset or another split is its own variant (its own subsets' key)."""
        variant = None
        if options.subjects or options.split != "test":
            tag = ",".join(sorted(options.subjects or [])) + f"|{options.split}"
            variant = hashlib.sha256(tag.encode()).hexdigest()[:8]
        return cls(data.task_path(options.data_path, "mmlu"), subjects=options.subjects,
                   split=options.split, variant=variant, limit=options.limit)

    def all_subjects(self) -> list[str]:
        folder = data.join(self.root, "data", "dev")
        names = [n.removesuffix("_dev.csv") for n in data.list_files(folder, "_dev.csv")]
        if not names:
            raise TaskDataError(f"{folder}: no MMLU *_dev.csv files")
        return names

    def subjects(self) -> list[str]:
        available = self.all_subjects()
        if not self.requested:
            return available
        unknown = sorted(set(self.requested) - set(available))
        if unknown:
            raise ValueError(f"unknown MMLU subject(s): {', '.join(unknown)}")
        return sorted(set(self.requested))

    def _load(self) -> list[Instance]:
        items = []
        for subject in self.subjects():
            dev = data.read_csv(data.join(self.root, "data", "dev", f"{subject}_dev.csv"), 6)
            path = data.join(self.root, "data", self.split, f"{subject}_{self.split}.csv")
            rows = data.read_csv(path, 6)
            self._shot_pools[subject] = Shots([self.shot_text(r[0], r[1:5], r[5]) for r in dev])
            for n, r in enumerate(rows):
                if r[5] not in "ABCD" or len(r[5]) != 1:
                    raise TaskDataError(f"{path}, row {n + 1}: answer {r[5]!r} is not A-D")
                items.append(
                    Instance(
                        id=f"mmlu-{subject}-{n}",
                        data={"question": r[0], "choices": r[1:5], "subject": subject},
                        reference=r[5],
                        stratum=subject,
                    )
                )
        return items

    def header(self, instance: Instance) -> str:
        subject = instance.data["subject"].replace("_", " ")
        return f"The following are multiple choice questions (with answers) about {subject}.\n\n"

    def _shots(self, instance: Instance) -> Shots:
        self.instances()
        return self._shot_pools[instance.data["subject"]]
