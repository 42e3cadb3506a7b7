"""dvc.yaml lists, for every stage, each pipeline module the stage's code imports.

DVC only reruns a stage when a listed dependency changes, so a missing module means a change to
shared code silently leaves stale outputs.
"""

import ast
import re

import pytest
import yaml
from conftest import REPO


def pipeline_imports(module: str, seen: set[str] | None = None) -> set[str]:
    """Transitive closure of `pipeline.*` modules imported by `module` (static, via ast)."""
    seen = set() if seen is None else seen
    if module in seen:
        return seen
    seen.add(module)
    path = REPO / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = REPO / module.replace(".", "/") / "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("pipeline")]
        for name in names:
            p = REPO / (name.replace(".", "/") + ".py")
            if p.exists() or (REPO / name.replace(".", "/") / "__init__.py").exists():
                pipeline_imports(name, seen)
    seen.add("pipeline")  # importing any submodule runs the package's __init__
    return seen


def _file(module: str) -> str:
    return "pipeline/__init__.py" if module == "pipeline" else module.replace(".", "/") + ".py"


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_lists_every_imported_module(stage):
    spec = STAGES[stage]
    module = re.search(r"python -m (\S+)", spec["cmd"]).group(1)
    needed = {_file(m) for m in pipeline_imports(module)}
    missing = needed - set(spec.get("deps", []))
    assert not missing, f"stage {stage}: add to deps: {sorted(missing)}"
