"""The components keep kubeflow/pipelines-components' layout: one folder per component with
``component.py``, ``__init__.py``, ``metadata.yaml`` (that repo's fields, in its order),
``OWNERS`` and ``tests/``; the folder, the metadata name and the function are one name."""

from __future__ import annotations

import ast
import datetime as dt
import importlib
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ROOT / "components"
FOLDERS = sorted(p for p in COMPONENTS.iterdir()
                 if p.is_dir() and not p.name.startswith(("_", ".")))
#: metadata.yaml's keys, in kubeflow/pipelines-components' order (docs/CONTRIBUTING.md)
REQUIRED = ["name", "description", "tier", "stability", "dependencies", "tags",
            "lastVerified"]
OPTIONAL = {"ci", "links"}
#: a dependency version as that repo's schema takes it: an operator and a full semver
VERSION = re.compile(r"^(==|>=|<=|~=)?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


def test_the_pipeline_components_are_the_folders():
    assert [p.name for p in FOLDERS] == ["control_budget", "evaluate_trial", "finalize_study",
                                         "sample_dataset", "start_engine",
                                         "update_surrogate"]
    # no component is built outside its folder
    for py in COMPONENTS.glob("*.py"):
        assert not _builds_components(ast.parse(py.read_text())), py.name


def _builds_components(tree: ast.AST) -> bool:
    """Whether a module calls (or decorates with) ``dsl.component``."""
    return any(isinstance(n, ast.Attribute) and n.attr == "component"
               and isinstance(n.value, ast.Name) and n.value.id == "dsl"
               for n in ast.walk(tree))


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_component_folder_has_the_required_files(folder: Path):
    for name in ("__init__.py", "component.py", "metadata.yaml", "OWNERS",
                 "tests/__init__.py", "tests/test_component.py"):
        assert (folder / name).is_file(), f"{folder.name}/{name} is missing"
    owners = yaml.safe_load((folder / "OWNERS").read_text())
    assert owners["approvers"], f"{folder.name}/OWNERS names no approver"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_metadata_has_the_required_keys_and_names_the_component(folder: Path):
    meta = yaml.safe_load((folder / "metadata.yaml").read_text())
    keys = [k for k in meta if k not in OPTIONAL]
    assert keys == REQUIRED, f"{folder.name}: keys {keys}, expected {REQUIRED} in that order"
    assert set(meta) <= set(REQUIRED) | OPTIONAL
    assert meta["name"] == folder.name
    assert isinstance(meta["description"], str) and meta["description"].strip()
    assert meta["tier"] in ("core", "third_party")
    assert meta["stability"] in ("alpha", "beta", "stable")
    assert isinstance(meta["lastVerified"], dt.datetime)
    assert meta["tags"] and all(isinstance(t, str) for t in meta["tags"])
    deps = meta["dependencies"]
    assert set(deps) <= {"kubeflow", "external_services"}
    for dep in [*deps["kubeflow"], *(deps.get("external_services") or [])]:
        assert set(dep) == {"name", "version"} and VERSION.match(dep["version"]), dep
    (kfp,) = [d for d in deps["kubeflow"] if d["name"] == "Pipelines"]
    assert kfp["version"] == ">=2.17.0"  # the SDK and backend the chart is built against

    # the metadata name is the @dsl.component's function, exported by the folder
    module = importlib.import_module(f"components.{folder.name}")
    component = getattr(module, meta["name"])
    assert component.python_func.__name__ == meta["name"]
    assert component.component_spec.name == meta["name"].replace("_", "-")
    assert meta["name"] in module.__all__


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_component_module_defines_its_component_and_imports_only_kfp_and_images(folder: Path):
    """The component's own module stays a thin wrapper: its body imports the library and
    the kfp-free shared modules when it runs; at module level only kfp and the images."""
    tree = ast.parse((folder / "component.py").read_text())
    top = {n.module if isinstance(n, ast.ImportFrom) else a.name
           for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)
           for a in n.names}
    assert top <= {"kfp", "typing", "components.images"}, top
    defs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert defs == [folder.name]


def test_the_pipeline_imports_every_component_from_its_folder():
    src = (ROOT / "pipelines" / "ecotune_loop.py").read_text()
    for folder in FOLDERS:
        assert f"from components.{folder.name} import {folder.name}" in src
