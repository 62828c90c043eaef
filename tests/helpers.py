"""What the tests share: the real chest X-rays shipped in tests/data (see its CREDITS.md), the tiny training
recipe, and running the project's scripts as users run them.

Checks that need the whole Kermany splits use ../shared/data (or PNEUMONIA_SHARED_DATA) where it is
there, and are skipped where it is not (`needs_full_data`)."""
from __future__ import annotations

import ast
import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "tests" / "data"
SHARED_DATA = Path(os.environ.get("PNEUMONIA_SHARED_DATA", REPO.parent / "shared" / "data"))
FULL_KERMANY = SHARED_DATA / "chest_xray"
KERMANY = SHIPPED / "kermany"  # the first 40 train and 12 test images per class, by name
FORMATS = SHIPPED / "formats"
needs_full_data = pytest.mark.skipif(not FULL_KERMANY.is_dir(),
                                     reason=f"needs the whole Kermany data at {FULL_KERMANY} (PNEUMONIA_SHARED_DATA)")
# a tiny network, trained and finalized fast: fp32 without test-time views unless a test asks for more
TINY_TRAIN_ARGS = ["--model", "test_resnet", "--no-pretrained", "--image-size", "64", "--batch-size", "8",
                   "--mixed-precision", "no", "--finalize-precision", "float32", "--finalize-tta", "none"]


def copy_subset(destination: Path, per_class: dict[str, int]) -> Path:
    """A small imagefolder of real Kermany images: {split}/{NORMAL,PNEUMONIA}/, first files by name."""
    for split, count in per_class.items():
        for label in ("NORMAL", "PNEUMONIA"):
            target = destination / split / label
            target.mkdir(parents=True, exist_ok=True)
            for source in sorted((KERMANY / split / label).iterdir())[:count]:
                shutil.copy(source, target / source.name)
    return destination


def run_script(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finalize_cli(*argv: str) -> None:
    """`python -m scripts.finalize ARGV`, run by the command's own main in this process: the same code path without
    an interpreter start and its imports (the kill test runs the real process)."""
    from scripts.finalize import main
    main([str(arg) for arg in argv])


def printed_by(main, argv: Sequence) -> str:
    """What `main(argv)`, a command's own main, prints when run in this process."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main([str(arg) for arg in argv])
    return printed.getvalue()


def predict_cli(*argv: str) -> str:
    """`python predict.py ARGV` run by its own main in this process (see finalize_cli); returns what it printed.
    A refusal raises SystemExit with the one sentence the user reads."""
    import predict
    return printed_by(lambda args: predict.main(predict.parse_args(args)), argv)


def evaluate_cli(*argv: str) -> str:
    """`python evaluate.py ARGV` in this process, as predict_cli."""
    import evaluate
    return printed_by(lambda args: evaluate.evaluate(evaluate.parse_args(args)), argv)


def train_cli(*argv: str) -> str:
    """`python train.py ARGV` in this process, as predict_cli (the runs that train stay real processes)."""
    import train
    return printed_by(lambda args: train.main(train.parse_args(args)), argv)


def refusal(cli, *argv) -> str:
    """The one sentence a command, run by `cli` in this process, stops with: its SystemExit message, which is all a
    user sees of it on stderr (an exception of any other kind fails the test, as a traceback would)."""
    with pytest.raises(SystemExit) as stopped:
        cli(*[str(arg) for arg in argv])
    assert isinstance(stopped.value.code, str), f"exited with {stopped.value.code!r}, not a sentence"
    return stopped.value.code


def modeling_imports(path: Path, package: Path = REPO / "modeling") -> set[str]:
    """The modules of `package` (dotted below it; "" for the package itself) that a file imports anywhere in it,
    relative imports and imports inside functions included; the file may lie inside the package or beside it."""
    where = path.relative_to(package.parent).with_suffix("").parts
    inside = list(where[1:-1]) if where[0] == package.name else []  # the file's subpackage, below the package
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = inside[:len(inside) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif node.module == package.name or (node.module or "").startswith(package.name + "."):
                parts = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # `from .pkg import module` or `from .module import name`
                candidate = parts + [alias.name]
                found.add(".".join(candidate if package.joinpath(*candidate).with_suffix(".py").exists() else parts))
        elif isinstance(node, ast.Import):
            found.update(alias.name.removeprefix(package.name + ".") for alias in node.names
                         if alias.name.startswith(package.name + "."))
    return found
