"""Fixtures shared by the tests: a Gradio cache of the session's own, and a small real dataset with a tiny model
trained on it."""
from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import TINY_TRAIN_ARGS, copy_subset, run_script


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
def tiny_run_dir(tmp_path_factory, small_data) -> Path:
    """A real (tiny) training run: test_resnet at 64 px, 2 epochs, finalized at its end."""
    out = tmp_path_factory.mktemp("tiny-run")
    run_script("train.py", "--data", str(small_data), "--output-dir", str(out), "--epochs", "2", *TINY_TRAIN_ARGS)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_run_dir) -> Path:
    """The tiny run's deployable model folder."""
    return tiny_run_dir / "model"
