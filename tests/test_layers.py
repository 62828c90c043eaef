"""The architecture, as the tree shows it: modeling/'s subpackages, each allowed to import only those below it
(imports inside functions count), no module importing itself back, and a runtime that needs no training,
analysis or plotting library. A deployment ships modeling/runtime/ alone."""
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, modeling_imports

PACKAGE = REPO / "modeling"
# bottom first: a module may import from its own subpackage or a lower one, never a higher one
SUBPACKAGES = ["runtime", "training", "gate_training", "analysis", "hub"]
LEVEL = {"runtime": 0, "training": 1, "gate_training": 2, "analysis": 2, "hub": 3}
RUNTIME_MUST_NOT_LOAD = ("datasets", "sklearn", "matplotlib", "modeling.training", "modeling.analysis",
                         "modeling.gate_training", "modeling.hub")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def modules() -> list[Path]:
    return [path for path in PACKAGE.rglob("*.py") if path.name != "__init__.py"]


def graph() -> dict[str, set[str]]:
    return {module_name(path): modeling_imports(path, PACKAGE) for path in modules()}


def subpackage(module: str) -> str:
    return module.split(".")[0]


def test_every_module_lives_in_a_subpackage():
    assert {subpackage(module) for module in graph()} == set(SUBPACKAGES)


def test_imports_point_down_only():
    upward = [(module, imported) for module, imports in graph().items() for imported in imports
              if LEVEL[subpackage(imported)] > LEVEL[subpackage(module)]
              or (LEVEL[subpackage(imported)] == LEVEL[subpackage(module)] and subpackage(imported) != subpackage(module))]
    assert upward == []


def test_no_module_imports_itself_back():
    edges = graph()

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    assert [module for module in edges if reaches(module, module, {module})] == []


def test_the_boundary_test_sees_a_runtime_module_that_imports_training(tmp_path, monkeypatch):
    """The check above on a copy of the package with one runtime module importing training: it must fail."""
    import shutil

    copy = tmp_path / "modeling"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    inference = copy / "runtime" / "inference.py"
    inference.write_text(inference.read_text() + "\nfrom ..training.data import load_data  # noqa\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", copy)
    assert ("runtime.inference", "training.data") in [(m, i) for m, imports in graph().items() for i in imports
                                                      if LEVEL[subpackage(i)] > LEVEL[subpackage(m)]]


def test_the_runtime_loads_no_training_analysis_or_plotting_code():
    """Every runtime module imported, as the demo and `Predictor.from_pretrained` would: neither datasets,
    scikit-learn nor matplotlib, nor any other modeling subpackage, is loaded."""
    runtime = sorted(f"modeling.{name}" for name in graph() if subpackage(name) == "runtime")
    code = (f"import sys\nimport {', '.join(runtime)}\n"
            f"print(sorted(m for m in sys.modules if m.startswith({RUNTIME_MUST_NOT_LOAD!r})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert len(runtime) >= 15 and result.stdout.strip() == "[]"


COMMAND_HOMES = ("app", "train", "evaluate", "predict", "scripts", "benchmarks")


def test_commands_live_at_the_root_scripts_and_benchmarks_never_in_the_library():
    """The user's four commands at the root, every other in scripts/ (making the model and its pages) or
    benchmarks/ (measuring it): the library has no entry point of its own and imports none."""
    import ast
    entry_points, imports_a_command = [], []
    for path in modules():
        tree = ast.parse(path.read_text())
        if any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body):
            entry_points.append(module_name(path))
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            imports_a_command += [(module_name(path), name) for name in names if name.split(".")[0] in COMMAND_HOMES]
    assert entry_points == [] and imports_a_command == []
