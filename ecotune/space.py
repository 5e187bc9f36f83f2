"""Search spaces over inference settings, and their encoding to the unit cube.

A space maps parameter names to typed ranges. Optimizers work in ``[0, 1]^d`` (one
dimension per parameter: log-scaled where asked, categoricals as evenly spaced bins) and
decode back to configs, so every optimizer proposes valid settings.

Example:
    >>> space = SearchSpace.from_dict({
    ...     "temperature": {"type": "float", "low": 0.0, "high": 1.0},
    ...     "max_tokens": {"type": "int", "low": 1, "high": 600, "log": True},
    ... })
    >>> space.decode(space.encode({"temperature": 0.5, "max_tokens": 32}))
    {'temperature': 0.5, 'max_tokens': 32}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, model_validator


class SearchSpaceError(ValueError):
    """The search space definition is invalid."""


class Condition(BaseModel):
    """The parameter is active only when ``param`` takes one of ``values``, or (``gt``) when
    the numeric ``param`` is above a threshold: ``{param: temperature, gt: 0}`` says a
    setting does nothing under greedy decoding."""

    model_config = ConfigDict(extra="forbid")
    param: str
    values: list[Any] | None = Field(None, min_length=1)
    gt: float | None = None

    @model_validator(mode="after")
    def _one(self) -> Condition:
        if (self.values is None) == (self.gt is None):
            raise ValueError("a condition needs exactly one of 'values' or 'gt'")
        return self

    def holds(self, value: Any) -> bool:
        if self.values is not None:
            return value in self.values
        return value is not None and float(value) > float(self.gt)  # type: ignore[arg-type]


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")
    condition: Condition | None = None


class FloatParam(_Base):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    default: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        return self

    def to_unit(self, v: Any) -> float:
        lo, hi, x = (math.log(self.low), math.log(self.high), math.log(v)) if self.log else (
            self.low, self.high, float(v))
        return 0.5 if hi == lo else (x - lo) / (hi - lo)

    def from_unit(self, u: float) -> float:
        if self.log:
            return float(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))
        return float(self.low + u * (self.high - self.low))

    def neutral(self) -> Any:
        return self.default if self.default is not None else self.from_unit(0.5)


class IntParam(_Base):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    default: int | None = None

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        return self

    def _edges(self) -> tuple[float, float]:
        """Bin edges in (log) space: each integer owns an equal-width bin."""
        if self.log:
            return math.log(max(self.low - 0.5, self.low / 2)), math.log(self.high + 0.5)
        return self.low - 0.5, self.high + 0.5

    def to_unit(self, v: Any) -> float:
        lo, hi = self._edges()
        x = math.log(v) if self.log else float(v)
        return min(max((x - lo) / (hi - lo), 0.0), 1.0)

    def from_unit(self, u: float) -> int:
        lo, hi = self._edges()
        x = lo + u * (hi - lo)
        return int(min(max(round(math.exp(x) if self.log else x), self.low), self.high))

    def neutral(self) -> Any:
        return self.default if self.default is not None else self.from_unit(0.5)


class CategoricalParam(_Base):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)
    default: Any = None

    @model_validator(mode="after")
    def _check(self) -> CategoricalParam:
        if len({repr(c) for c in self.choices}) != len(self.choices):
            raise ValueError("choices must be distinct")
        if self.default is not None and self.default not in self.choices:
            raise ValueError(f"default {self.default!r} is not one of the choices")
        return self

    def to_unit(self, v: Any) -> float:
        k = len(self.choices)
        return (self.choices.index(v) + 0.5) / k

    def from_unit(self, u: float) -> Any:
        k = len(self.choices)
        return self.choices[min(int(u * k), k - 1)]

    def neutral(self) -> Any:
        return self.default if self.default is not None else self.choices[0]


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def _check_range(low: float, high: float, log: bool) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("low and high must be finite")
    if low > high:
        raise ValueError(f"low ({low}) must be <= high ({high})")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0 (got {low})")


class _Params(RootModel[dict[str, Param]]):
    pass


class SearchSpace:
    """An ordered set of named parameters; immutable once built."""

    def __init__(self, params: dict[str, FloatParam | IntParam | CategoricalParam]):
        if not params:
            raise SearchSpaceError("search space is empty: define at least one parameter")
        for name, p in params.items():
            if p.condition is not None and p.condition.param not in params:
                raise SearchSpaceError(
                    f"parameter {name!r}: condition refers to unknown parameter "
                    f"{p.condition.param!r}")
        # parents before the parameters conditioned on them, otherwise in the given order
        # (so a space read back with its keys sorted is the same space)
        order: list[str] = []
        while len(order) < len(params):
            ready = [n for n, p in params.items() if n not in order
                     and (p.condition is None or p.condition.param in order)]
            if not ready:
                stuck = sorted(set(params) - set(order))
                raise SearchSpaceError(f"parameters {stuck}: their conditions form a cycle")
            order.append(ready[0])
        self.params = {n: params[n] for n in order}
        self.names = order

    @property
    def dim(self) -> int:
        return len(self.names)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> SearchSpace:
        """Build from ``{name: {type: float|int|categorical, low, high, log, choices}}``."""
        if not isinstance(spec, dict):
            raise SearchSpaceError(f"search space must be a mapping, got {type(spec).__name__}")
        if not spec:
            raise SearchSpaceError("search space is empty: define at least one parameter")
        try:
            parsed = _Params.model_validate(spec).root
        except ValidationError as e:
            raise SearchSpaceError(_pretty(e)) from None
        return cls(parsed)

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> SearchSpace:
        """Build from a YAML file path, or YAML text."""
        p = Path(path_or_text) if not str(path_or_text).lstrip().startswith("{") else None
        if p is not None and "\n" not in str(path_or_text) and p.exists():
            text = p.read_text()
        elif p is not None and "\n" not in str(path_or_text) and str(path_or_text).endswith(
                (".yaml", ".yml")):
            raise SearchSpaceError(f"search space file not found: {path_or_text}")
        else:
            text = str(path_or_text)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SearchSpaceError(f"search space YAML does not parse: {e}") from None
        if isinstance(data, dict) and "search_space" in data and len(data) == 1:
            data = data["search_space"]
        return cls.from_dict(data or {})

    def to_dict(self) -> dict[str, Any]:
        return {n: p.model_dump(exclude_none=True) for n, p in self.params.items()}

    # -- encoding ---------------------------------------------------------------------
    def is_active(self, name: str, config: dict[str, Any]) -> bool:
        cond = self.params[name].condition
        if cond is None:
            return True
        return self.is_active(cond.param, config) and cond.holds(config.get(cond.param))

    def canonical(self, config: dict[str, Any]) -> dict[str, Any]:
        """The config without the space's settings that are inactive (inert) in it, so two
        configs that decode identically are one config (keys outside the space are kept).

        >>> s = SearchSpace.from_dict({"temperature": {"type": "float", "low": 0, "high": 1},
        ...     "top_p": {"type": "float", "low": 0.1, "high": 1,
        ...               "condition": {"param": "temperature", "gt": 0}}})
        >>> s.canonical({"temperature": 0.0, "top_p": 0.3})
        {'temperature': 0.0}
        """
        return {k: v for k, v in config.items()
                if k not in self.params or self.is_active(k, config)}

    def encode(self, config: dict[str, Any]) -> np.ndarray:
        """Config -> point in ``[0, 1]^d`` (inactive parameters sit at 0.5)."""
        missing = [n for n in self.names if n not in config and self.is_active(n, config)]
        if missing:
            raise SearchSpaceError(f"config lacks parameters {missing}")
        return np.array([
            self.params[n].to_unit(config[n]) if n in config and self.is_active(n, config) else 0.5
            for n in self.names
        ])

    def decode(self, u: np.ndarray) -> dict[str, Any]:
        """Point in ``[0, 1]^d`` -> config; inactive conditional parameters are left out."""
        u = np.clip(np.asarray(u, dtype=float).reshape(-1), 0.0, 1.0)
        if u.shape[0] != self.dim:
            raise ValueError(f"expected {self.dim} coordinates, got {u.shape[0]}")
        config: dict[str, Any] = {}
        for n, x in zip(self.names, u, strict=True):
            config[n] = self.params[n].from_unit(float(x))
        for n in self.names:
            if not self.is_active(n, config):
                config.pop(n, None)
        return config

    def validate_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Clip a user config (e.g. the HELM default) into the space, filling gaps."""
        out = {}
        for n, p in self.params.items():
            v = config.get(n, p.neutral())
            if isinstance(p, CategoricalParam):
                out[n] = v if v in p.choices else p.neutral()
            else:
                out[n] = type(p.low)(min(max(v, p.low), p.high))
        return {n: v for n, v in out.items() if self.is_active(n, out)}

    def sample(self, rng: np.random.Generator, n: int = 1) -> list[dict[str, Any]]:
        return [self.decode(x) for x in rng.random((n, self.dim))]

    def __repr__(self) -> str:
        return f"SearchSpace({', '.join(self.names)})"


def _pretty(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"] if x not in ("float", "int", "categorical"))
        lines.append(f"{loc}: {err['msg']}")
    return "invalid search space:\n  " + "\n  ".join(lines)


def default_llm_space(
    *, max_tokens: tuple[int, int] = (1, 600), penalties: bool = False, few_shot: int | None = None
) -> SearchSpace:
    """The paper's LLM-inference space, as a conditional space.

    ``decoding`` chooses greedy or sampled decoding; the sampling knobs (temperature, top_p,
    top_k, min_p) exist only under ``sample``: under greedy decoding they change nothing,
    so every greedy config is one config (see :meth:`SearchSpace.canonical`).

    Args:
        max_tokens: range of ``max_tokens`` (1 for multiple choice up to 600 for code).
        penalties: add presence and frequency penalties.
        few_shot: if given, add ``few_shot`` in ``[0, few_shot]``.
    """
    sample = {"param": "decoding", "values": ["sample"]}
    spec: dict[str, Any] = {
        "decoding": {"type": "categorical", "choices": ["greedy", "sample"]},
        "temperature": {"type": "float", "low": 0.05, "high": 1.0, "condition": sample},
        "top_p": {"type": "float", "low": 0.1, "high": 1.0, "condition": sample},
        "top_k": {"type": "int", "low": 1, "high": 100, "log": True, "condition": sample},
        "min_p": {"type": "float", "low": 0.0, "high": 0.3, "condition": sample},
        "max_tokens": {"type": "int", "low": max_tokens[0], "high": max_tokens[1], "log": True},
        "repetition_penalty": {"type": "float", "low": 1.0, "high": 1.5},
        "length_penalty": {"type": "float", "low": 0.8, "high": 1.2},
    }
    if penalties:
        spec["presence_penalty"] = {"type": "float", "low": 0.0, "high": 1.0}
        spec["frequency_penalty"] = {"type": "float", "low": 0.0, "high": 1.0}
    if few_shot is not None:
        spec["few_shot"] = {"type": "int", "low": 0, "high": few_shot}
    return SearchSpace.from_dict(spec)


#: HELM's default decoding (greedy, no truncation tricks, 5 in-context examples).
HELM_DEFAULT: dict[str, Any] = {
    "decoding": "greedy",
    "temperature": 0.0,
    "top_p": 1.0,
    "top_k": 100,  # at the top of the range: no truncation
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "few_shot": 5,
}


def helm_default(space: SearchSpace, max_tokens: int | None = None) -> dict[str, Any]:
    """The HELM default configuration, clipped into ``space``."""
    cfg = dict(HELM_DEFAULT)
    if max_tokens is not None:
        cfg["max_tokens"] = max_tokens
    return space.validate_config(cfg)
