"""dvc.yaml lists, for every stage, each pipeline module the stage's code imports.

DVC only reruns a stage when a listed dependency changes, so a missing module means a change to
shared code silently leaves stale outputs.
"""

import ast
import re

import pytest
import yaml
from project import REPO


def module_file(name: str):
    """The file of module `name` (a .py, or a package's __init__.py), or None if not ours."""
    path = REPO / (name.replace(".", "/") + ".py")
    if path.exists():
        return path
    init = REPO / name.replace(".", "/") / "__init__.py"
    return init if init.exists() else None


def pipeline_imports(module: str, seen: set[str] | None = None) -> set[str]:
    """Transitive closure of `pipeline.*` modules imported by `module` (static, via ast),
    with every package whose __init__ an import runs."""
    seen = set() if seen is None else seen
    path = module_file(module)
    if module in seen or path is None:
        return seen
    seen.add(module)
    parts = module.split(".")
    for i in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__
        pipeline_imports(".".join(parts[:i]), seen)
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("pipeline")]
        for name in names:
            pipeline_imports(name, seen)
    return seen


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_lists_every_imported_module(stage):
    spec = STAGES[stage]
    module = re.search(r"python -m (\S+)", spec["cmd"]).group(1)
    needed = {str(module_file(m).relative_to(REPO)) for m in pipeline_imports(module)}
    missing = needed - set(spec.get("deps", []))
    assert not missing, f"stage {stage}: add to deps: {sorted(missing)}"


def test_closure_follows_packages_and_imports():
    closure = pipeline_imports("pipeline.evaluate")
    assert {"pipeline", "pipeline.model", "pipeline.model.cnn", "pipeline.files"} <= closure
    assert "pipeline.tracking" not in closure  # evaluate logs nothing to MLflow
