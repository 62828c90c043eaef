"""modeling/ imports only point down: no module imports, directly or through others, one that imports it back
(imports inside functions count)."""
import ast
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

PACKAGE = REPO / "modeling"
# the layers, bottom first; a module may import its own layer's modules or lower ones, never higher
LAYERS = [
    {"runtime", "files", "config", "metrics", "probability", "preprocessing", "geometry", "display", "budget", "trainable"},
    {"views", "augment", "data", "calibration", "ood", "artifacts", "checkpointing", "robustness", "plots",
     "non_xray", "lungs", "worklist", "gate", "gate_negatives", "reference"},
    {"model"},
    {"quantize", "explain", "inference", "evaluation"},
    {"finalize", "hub", "shortcuts", "gate_training", "lineage"},
]


def imports_of(path: Path) -> set[str]:
    """The modeling modules a file imports anywhere in it (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("modeling."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("modeling."))
    return found - {"__init__"}


def graph() -> dict[str, set[str]]:
    return {path.stem: imports_of(path) for path in PACKAGE.glob("*.py") if path.stem != "__init__"}


def test_every_module_has_a_layer():
    assert set(graph()) == set().union(*LAYERS)


def test_imports_point_down_only():
    layer_of = {module: i for i, layer in enumerate(LAYERS) for module in layer}
    upward = [(module, imported) for module, imports in graph().items() for imported in imports
              if layer_of[imported] > layer_of[module]]
    assert upward == []


def test_no_module_imports_itself_back():
    edges = graph()

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    assert [module for module in edges if reaches(module, module, {module})] == []


def test_the_inference_path_imports_no_training_or_plotting_library():
    """What the demo and `Predictor.from_pretrained` need loads neither datasets, scikit-learn nor matplotlib."""
    code = ("import sys, modeling.inference\n"
            "print(sorted(m for m in ('datasets', 'sklearn', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
