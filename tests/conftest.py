"""Shared fixtures: real chest X-rays shipped in tests/data (see its CREDITS.md), and tiny models trained on them.

Checks that need the whole Kermany splits use ../shared/data (or PNEUMONIA_SHARED_DATA) where it is
there, and are skipped where it is not (`needs_full_data`)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


@pytest.fixture(scope="session", autouse=True)
def gradio_cache_of_this_session(tmp_path_factory):
    """Demos built in this process get a Gradio cache of this test session's own. Gradio names cached files by
    content, so two suites running at once on one machine would otherwise share, and delete, each other's copies
    of the same test image."""
    folder = tmp_path_factory.mktemp("gradio")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    return copy_subset(tmp_path_factory.mktemp("data"), {"train": 40, "test": 12})


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, small_data) -> Path:
    """A real (tiny) training run: test_resnet at 64 px, 2 epochs."""
    out = tmp_path_factory.mktemp("tiny-run")
    run_script("train.py", "--data", str(small_data), "--output-dir", str(out), "--epochs", "2", *TINY_TRAIN_ARGS)
    return out
