"""Reach the study's engine: start the embedded vLLM (``engine: local``) or connect to an
OpenAI-compatible endpoint, check it serves the model, and close it all afterwards."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ecotune.config import LocalEngine, StudyConfig, StudyError
from ecotune.engines import EngineConfig, EngineError, make_engine


@contextmanager
def engine_session(cfg: StudyConfig, say: Any = print) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Start (``local``) or connect to the engine and check it; yields ``(engine, spec)``
    where ``spec`` (base_url, model, api_key_env) is what a promoted model records."""
    server = None
    try:
        if isinstance(cfg.engine, LocalEngine):
            from ecotune.serve_local import SERVED_MODEL_NAME, LocalVLLM, ServeError, prepare_model

            url = os.environ.get("ECOTUNE_VLLM_URL")
            if url:
                base = url.rstrip("/").removesuffix("/v1")
                say(f"engine: embedded model on the running local server {base} (ECOTUNE_VLLM_URL)")
            else:
                try:
                    model_dir = prepare_model(cfg.engine.model_dir)
                    server = LocalVLLM(model_dir, cfg.engine.port,
                                       max_model_len=cfg.engine.max_model_len,
                                       startup_timeout_s=cfg.engine.startup_timeout_s)
                    say(f"engine: starting embedded vLLM ({SERVED_MODEL_NAME}, CPU; about 40 s; "
                        f"log {server.log_path})")
                    t0 = time.monotonic()
                    server.start()
                    base = server.base_url
                except ServeError as e:
                    raise StudyError(f"embedded engine did not start: {e}") from e
                say(f"engine: ready at {base} after {time.monotonic() - t0:.0f} s")
            ec = EngineConfig(base_url=base, model=SERVED_MODEL_NAME, send_seed=False,
                              max_concurrency=cfg.engine.max_concurrency,
                              timeout_s=cfg.engine.timeout_s)
        else:
            ec = cfg.engine
        try:
            engine = make_engine(ec)
            engine.check()
        except EngineError as e:
            raise StudyError(f"engine check failed: {e}") from e
        spec = {"base_url": ec.base_url, "model": ec.model}
        if ec.api_key_env:
            spec["api_key_env"] = ec.api_key_env
        try:
            yield engine, spec
        finally:
            engine.close()
    finally:
        if server is not None:
            say("engine: stopping embedded vLLM")
            server.stop()
