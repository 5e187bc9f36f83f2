"""Render the Helm chart (helm/ecotune) for the chart tests: the real helm binary from
``scripts/install_tools.sh`` (.tools/bin) or PATH; a test fails, saying so, without it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "ecotune"
EXAMPLES = CHART / "examples"
CI = CHART / "ci"
TOOLS_BIN = ROOT / ".tools" / "bin"
KUBE_VERSION = "1.30.0"


def tool(name: str) -> str:
    path = TOOLS_BIN / name
    if path.exists() and os.access(path, os.X_OK):
        return str(path)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"{name} not found: run scripts/install_tools.sh (installs it into .tools/bin)")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("helm"), *args], capture_output=True, text=True, timeout=120)


def render(*values: Path | str, sets: tuple[str, ...] = ()) -> list[dict]:
    """The manifests for ``values`` files (release ``ecotune`` in namespace ``tuning``)."""
    args = ["template", "ecotune", str(CHART), "--namespace", "tuning",
            "--kube-version", KUBE_VERSION]
    for v in values:
        args += ["-f", str(v)]
    for s in sets:
        args += ["--set", s]
    res = helm(*args)
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def study_configs(docs: list[dict]) -> dict[str, dict]:
    """The study configs of the rendered ConfigMap, by study name."""
    (cm,) = of_kind(docs, "ConfigMap")
    return {k.removesuffix(".yaml"): yaml.safe_load(v) for k, v in cm["data"].items()}


def pod_specs(docs: list[dict]) -> list[dict]:
    specs = []
    for d in docs:
        if d["kind"] == "CronJob":
            specs.append(d["spec"]["jobTemplate"]["spec"]["template"]["spec"])
        elif d["kind"] in ("Job", "Deployment"):
            specs.append(d["spec"]["template"]["spec"])
        elif d["kind"] == "Pod":
            specs.append(d["spec"])
    return specs
