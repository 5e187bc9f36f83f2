#!/usr/bin/env bash
# Lint and render the EcoTune Helm chart for every scenario, and validate each rendered
# manifest against the Kubernetes OpenAPI schemas (kubernetes-validate --strict).
#
# Scenarios: the default values, helm/ecotune/examples/*.yaml and helm/ecotune/ci/*-values.yaml
# (chart-testing's naming; other files in ci/, such as checkov.yaml, are not values).
# Tools come from .tools/bin (scripts/install_tools.sh) or PATH.
# Env: KUBE_VERSION (default 1.30.0), OUT_DIR (keep the rendered manifests there).
# Reports every scenario; exits non-zero if any failed (2 when a tool is missing).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/helm/ecotune"
KUBE_VERSION="${KUBE_VERSION:-1.30.0}"
export PATH="$ROOT/.tools/bin:$PATH"

for tool in helm kubernetes-validate; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "check_chart: '$tool' not found; run scripts/install_tools.sh first" >&2
        exit 2
    fi
done

OUT_DIR="${OUT_DIR:-$(mktemp -d)}"
mkdir -p "$OUT_DIR"
failures=0

run_scenario() {  # run_scenario NAME [VALUES_FILE]
    local name="$1" values=()
    [[ $# -ge 2 ]] && values=(-f "$2")
    local out="$OUT_DIR/$name.yaml"
    echo "== $name"
    if ! helm lint "$CHART" --strict --kube-version "$KUBE_VERSION" "${values[@]}" >"$OUT_DIR/$name.lint" 2>&1; then
        cat "$OUT_DIR/$name.lint"; echo "FAIL $name: helm lint"; return 1
    fi
    if ! helm template ecotune "$CHART" --namespace ecotune --kube-version "$KUBE_VERSION" \
            "${values[@]}" >"$out" 2>"$OUT_DIR/$name.err"; then
        cat "$OUT_DIR/$name.err"; echo "FAIL $name: helm template"; return 1
    fi
    if ! kubernetes-validate --strict --quiet -k "$KUBE_VERSION" "$out"; then
        echo "FAIL $name: kubernetes-validate (k8s $KUBE_VERSION, strict)"; return 1
    fi
    if grep -nE '^\s+image:\s*\S+:latest\s*$' "$out"; then
        echo "FAIL $name: an image uses the latest tag"; return 1
    fi
    echo "ok   $name ($(grep -c '^kind:' "$out") resources -> $out)"
}

run_scenario default || failures=$((failures + 1))
for f in "$CHART"/examples/*.yaml "$CHART"/ci/*-values.yaml; do
    [[ -e "$f" ]] || continue
    run_scenario "$(basename "$(dirname "$f")")-$(basename "$f" .yaml)" "$f" || failures=$((failures + 1))
done

if (( failures )); then
    echo "check_chart: $failures scenario(s) failed" >&2
    exit 1
fi
echo "check_chart: all scenarios passed (helm $(helm version --short), k8s $KUBE_VERSION)"
