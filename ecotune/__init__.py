"""EcoTune: tune an LLM's inference settings for a task, spending as few tokens as possible."""

from ecotune.space import SearchSpace, default_llm_space
from ecotune.trial import Trial, TrialResult, TrialStatus

__version__ = "0.1.0"
__all__ = ["SearchSpace", "Trial", "TrialResult", "TrialStatus", "default_llm_space"]
