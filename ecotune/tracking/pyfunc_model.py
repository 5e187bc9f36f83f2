"""The promoted artefact: an inference configuration as an MLflow pyfunc model.

Loading a registered version gives a model whose ``predict`` sends prompts to the
configured OpenAI-compatible server (``POST <base_url>/v1/completions``) with exactly the
tuned sampling settings, every one sent explicitly. The file is logged "from code"
(MLflow's models-from-code), with the settings in the model's ``model_config``, so the
artefact needs only ``mlflow`` and ``httpx`` at load time, not ecotune, and no pickles.

``model_config`` keys:
    engine: ``{"base_url", "model", "api_key_env" (name of the env var holding the key,
        never the key), "timeout_s"}``.
    sampling: the full request sampling fields (``SamplingParams.to_request()``).
    config: the tuned config as found by the study (for reference, e.g. ``few_shot``).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import mlflow
from mlflow.pyfunc import PythonModel


def completions_url(base_url: str) -> str:
    """``http://h:8000`` or ``http://h:8000/v1`` -> ``http://h:8000/v1/completions``."""
    base = base_url.rstrip("/")
    return f"{base}/completions" if base.endswith("/v1") else f"{base}/v1/completions"


def _prompts(model_input: Any) -> list[str]:
    """Prompts from a DataFrame (``prompt`` column, else the first), Series, list or str."""
    if isinstance(model_input, str):
        return [model_input]
    if hasattr(model_input, "columns"):  # pandas DataFrame
        col = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
        return [str(p) for p in model_input[col].tolist()]
    if hasattr(model_input, "tolist"):  # Series / ndarray
        return [str(p) for p in model_input.tolist()]
    if isinstance(model_input, dict):
        p = model_input.get("prompt", [])
        return [p] if isinstance(p, str) else [str(x) for x in p]
    return [str(p) for p in model_input]


class InferenceConfigModel(PythonModel):
    """Completions with the promoted sampling settings; one request per prompt."""

    def load_context(self, context: Any) -> None:
        cfg = dict(context.model_config or {})
        self.engine: dict[str, Any] = dict(cfg.get("engine", {}))
        self.sampling: dict[str, Any] = dict(cfg.get("sampling", {}))

    def request_body(self, prompt: str) -> dict[str, Any]:
        """The JSON body for one prompt: model, prompt and every sampling field."""
        return {"model": self.engine["model"], "prompt": prompt, **self.sampling}

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        """Return one completion text (``list[str]``) per prompt in ``model_input``.

        Left unannotated on purpose: MLflow turns type hints on ``predict`` into input
        validation, which would reject the DataFrame/list/str inputs accepted here."""
        if not hasattr(self, "engine"):
            self.load_context(context)
        headers = {}
        key_env = self.engine.get("api_key_env")
        if key_env and os.environ.get(key_env):
            headers["Authorization"] = f"Bearer {os.environ[key_env]}"
        url = completions_url(self.engine["base_url"])
        out = []
        with httpx.Client(timeout=float(self.engine.get("timeout_s", 120.0))) as http:
            for prompt in _prompts(model_input):
                r = http.post(url, json=self.request_body(prompt), headers=headers)
                r.raise_for_status()
                out.append(r.json()["choices"][0]["text"])
        return out


mlflow.models.set_model(InferenceConfigModel())
