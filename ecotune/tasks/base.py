"""The task interface: instances, prompts and scoring for one benchmark.

A :class:`Task` turns a trial config into prompts and completions into scores. Few-shot
examples are fixed per task (and per stratum, e.g. per MMLU subject) and placed first, so
every request of a trial for one stratum shares a byte-identical prefix that the engine's
prefix cache can reuse.

Each task declares its own options, a :class:`TaskOptions` model with ``name`` a literal,
and builds itself from them (:meth:`Task.from_options`); the registry
(:mod:`ecotune.tasks.registry`) chooses the model by ``name``, so an option that a task
does not take is an error, not silently ignored.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ecotune.decoding import few_shot_count


class TaskDataError(ValueError):
    """A task's data file is missing, empty or malformed (the message names file and row)."""


@dataclass(frozen=True)
class Instance:
    """One evaluation item.

    Attributes:
        id: Stable, task-unique id (the same across runs and machines).
        data: The raw fields the prompt and scorer need.
        reference: The gold answer (letter, number, text), for reporting.
        stratum: Group used for stratified subsets (e.g. the MMLU subject), or ``None``.
    """

    id: str
    data: dict[str, Any]
    reference: Any = None
    stratum: str | None = None


class TaskOptions(BaseModel):
    """What every task takes; each task subclasses it with its own options.

    A subclass sets ``name`` to a ``Literal`` of the registry name(s) it answers to, which
    is what the registry's discriminated union selects the model by.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    limit: int | None = Field(None, ge=1, description="keep only the first `limit` instances")


class Task(ABC):
    """A benchmark: ordered instances, prompt construction and a per-instance scorer.

    Subclasses set ``name``, ``default_few_shot``, ``default_max_tokens`` and
    ``stop_sequences`` and implement :meth:`_load`, :meth:`prefix` and :meth:`render`.

    Example:
        >>> task = make_task({"name": "arithmetic", "limit": 10})  # doctest: +SKIP
        >>> inst = task.instances()[0]
        >>> prompt = task.build_prompt(inst, {"few_shot": 3})
        >>> task.score(inst, " 17")
    """

    name: str = "task"
    default_few_shot: int = 0
    default_max_tokens: int = 16
    stop_sequences: list[str] = []
    metric: str = "accuracy"
    #: the options a study config gives this task (a :class:`TaskOptions` subclass)
    Options: ClassVar[type[TaskOptions]] = TaskOptions

    def __init__(self, *, variant: str | None = None, limit: int | None = None):
        self.variant = variant
        self.limit = limit
        self._instances: list[Instance] | None = None

    @classmethod
    def from_options(cls, options: Any) -> Task:
        """The task its validated options (an instance of ``cls.Options``) describe."""
        raise NotImplementedError(f"{cls.__name__} does not say how to build from options")

    # -- data ---------------------------------------------------------------------------
    @abstractmethod
    def _load(self) -> list[Instance]:
        """Read every instance, in the source's order."""

    def instances(self) -> list[Instance]:
        """All instances (after ``limit``), in a stable order; loaded once."""
        if self._instances is None:
            items = self._load()
            if not items:
                raise TaskDataError(f"task {self.name!r} has no instances")
            ids = [i.id for i in items]
            if len(set(ids)) != len(ids):
                raise TaskDataError(f"task {self.name!r} has duplicate instance ids")
            self._instances = items[: self.limit] if self.limit else items
        return self._instances

    def instance(self, instance_id: str) -> Instance:
        """Look one instance up by id (KeyError if absent)."""
        by_id = {i.id: i for i in self.instances()}
        return by_id[instance_id]

    @property
    def key(self) -> str:
        """Storage name for this task's subsets: the name, plus a variant tag if any."""
        return f"{self.name}-{self.variant}" if self.variant else self.name

    def source_sha256(self) -> str:
        """Hash of the instance contents, to detect a changed data set."""
        h = hashlib.sha256()
        for inst in self.instances():
            h.update(json.dumps([inst.id, inst.data], sort_keys=True, default=str).encode())
            h.update(b"\n")
        return h.hexdigest()

    # -- prompting ------------------------------------------------------------------------
    def n_shots(self, config: dict[str, Any]) -> int:
        """Few-shot count the config asks for (``few_shot``), never negative."""
        return max(0, few_shot_count(config, self.default_few_shot))

    @abstractmethod
    def prefix(self, instance: Instance, n_shots: int) -> str:
        """Instructions and few-shot block shared by every instance of a stratum."""

    @abstractmethod
    def render(self, instance: Instance) -> str:
        """The instance's own part of the prompt (ends where the model answers)."""

    def build_prompt(self, instance: Instance, config: dict[str, Any]) -> str:
        """The full prompt: shared prefix (instructions + few-shot) then the instance."""
        return self.prefix(instance, self.n_shots(config)) + self.render(instance)

    # -- scoring --------------------------------------------------------------------------
    @abstractmethod
    def score(self, instance: Instance, completion: str) -> float:
        """Score one completion in [0, 1]."""


@dataclass
class Shots:
    """A fixed pool of few-shot examples, formatted once; ``block(k)`` is the first k."""

    examples: list[str] = field(default_factory=list)
    sep: str = "\n\n"

    def block(self, k: int) -> str:
        chosen = self.examples[: min(k, len(self.examples))]
        return "".join(e + self.sep for e in chosen)
