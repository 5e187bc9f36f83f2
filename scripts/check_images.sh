#!/usr/bin/env bash
# Check the EcoTune container images without a Docker engine:
#   1. hadolint every images/*/Dockerfile (fails on error-level findings; all are printed);
#   2. image policy: FROM pinned to a version tag (never latest/untagged), a non-root USER as
#      the last USER, no ENV/ARG whose name looks like a secret;
#   3. the control-plane requirements resolve for Python 3.11 with requirements/constraints.txt
#      as constraints, as the Dockerfile installs them (pip --dry-run --ignore-installed).
#      Only PyPI is reachable here, so torch resolves from PyPI (and this machine's local wheel
#      cache) instead of the PyTorch CPU index the Dockerfile uses; the Dockerfile's
#      TORCH_VERSION must equal the torch pin;
#   4. the evaluator's extra requirements resolve as wheels for the base image's Python 3.12 on
#      manylinux x86_64 (vllm itself comes from the base image and is not resolved).
# Tools: hadolint from .tools/bin (scripts/install_tools.sh) or PATH; pip from $PYTHON, .venv,
# .tools/venv or python3. Exits non-zero on any failure (2 when a tool is missing).
# Env: IMAGES_DIR (default images/), SKIP_RESOLVE=1 (only steps 1-2: no network).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$ROOT/.tools/bin:$PATH"
IMAGES="${IMAGES_DIR:-$ROOT/images}"

if ! command -v hadolint >/dev/null 2>&1; then
    echo "check_images: 'hadolint' not found; run scripts/install_tools.sh first" >&2
    exit 2
fi
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    for cand in "$ROOT/.venv/bin/python" "$ROOT/.tools/venv/bin/python" python3; do
        if "$cand" -m pip --version >/dev/null 2>&1; then PY="$cand"; break; fi
    done
fi
[[ -n "$PY" ]] || { echo "check_images: no python with pip found" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

# 1. hadolint ---------------------------------------------------------------------------------
for df in "$IMAGES"/*/Dockerfile; do
    rel="${df#"$ROOT"/}"
    if hadolint --no-color --failure-threshold error "$df"; then
        echo "ok   hadolint $rel"
    else
        fail "hadolint $rel"
    fi
done

# 2. policy -----------------------------------------------------------------------------------
if "$PY" - "$IMAGES" <<'EOF'
import pathlib, re, sys

SECRET = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.I)
bad = 0
for df in sorted(pathlib.Path(sys.argv[1]).glob("*/Dockerfile")):
    text = re.sub(r"\\\n", " ", df.read_text())
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    stages = set()
    users = []
    for line in lines:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            parts = rest.split()
            image = parts[0]
            if len(parts) >= 3 and parts[1].upper() == "AS":
                stages.add(parts[2])
            if image in stages or "@sha256:" in image:
                continue
            tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
            if not tag or tag == "latest" or not re.search(r"\d", tag):
                print(f"{df}: FROM {image} is not pinned to a version tag"); bad += 1
        elif word == "USER":
            users.append(rest.split(":")[0])
        elif word in ("ENV", "ARG"):
            for name in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", rest):
                if SECRET.search(name):
                    print(f"{df}: {word} {name} looks like a secret"); bad += 1
    if not users or users[-1] in ("root", "0"):
        print(f"{df}: the image must end with a non-root USER"); bad += 1
sys.exit(1 if bad else 0)
EOF
then echo "ok   policy (pinned FROM, non-root USER, no secret ENV/ARG)"; else fail "policy"; fi

if [[ "${SKIP_RESOLVE:-0}" == 1 ]]; then
    echo "skip requirement resolution (SKIP_RESOLVE=1)"
    (( failures )) && { echo "check_images: $failures check(s) failed" >&2; exit 1; }
    echo "check_images: all checks passed"; exit 0
fi

# 3. control-plane requirements --------------------------------------------------------------
req="$IMAGES/control-plane/requirements.txt"
pin="$(grep -E '^torch==' "$req" | cut -d= -f3)"
arg="$(grep -E '^ARG TORCH_VERSION=' "$IMAGES/control-plane/Dockerfile" | cut -d= -f2)"
if [[ -z "$pin" || "$pin" != "$arg" ]]; then
    fail "control-plane: Dockerfile TORCH_VERSION ($arg) != requirements torch pin ($pin)"
fi
if "$PY" -m pip install --dry-run --ignore-installed --quiet --report "$work/cp.json" \
        -c "$ROOT/requirements/constraints.txt" -r "$req" >"$work/cp.log" 2>&1; then
    n="$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["install"]))' "$work/cp.json")"
    echo "ok   control-plane requirements resolve ($n distributions, python $("$PY" -c 'import sys; print(sys.version.split()[0])'))"
else
    grep -v '^WARNING: Location' "$work/cp.log" | tail -20
    fail "control-plane requirements do not resolve"
fi

# 4. evaluator extra requirements ------------------------------------------------------------
# kfp's kfp-server-api ships only as an sdist (pure Python), which a cross-platform resolve
# (--only-binary) cannot take: those lines are resolved for this interpreter instead.
grep -v '^kfp' "$IMAGES/evaluator/requirements.txt" > "$work/ev-wheels.txt"
grep '^kfp' "$IMAGES/evaluator/requirements.txt" > "$work/ev-kfp.txt" || true
if [ -s "$work/ev-kfp.txt" ]; then
    if "$PY" -m pip install --dry-run --ignore-installed --quiet -r "$work/ev-kfp.txt" \
            >"$work/ev-kfp.log" 2>&1; then
        echo "ok   evaluator kfp requirements resolve"
    else
        tail -20 "$work/ev-kfp.log"
        fail "evaluator kfp requirements do not resolve"
    fi
fi
if "$PY" -m pip install --dry-run --ignore-installed --quiet --only-binary=:all: \
        --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any \
        --target "$work/evaluator" --report "$work/ev.json" \
        -r "$work/ev-wheels.txt" >"$work/ev.log" 2>&1; then
    echo "ok   evaluator extra requirements resolve (python 3.12, manylinux x86_64 wheels)"
else
    grep -v '^WARNING: Location' "$work/ev.log" | tail -20
    fail "evaluator requirements do not resolve"
fi

if (( failures )); then
    echo "check_images: $failures check(s) failed" >&2
    exit 1
fi
echo "check_images: all checks passed"
