"""The Hugging Face door: `transformers.pipeline("image-classification", model=<the bundle>)` loads the bundle through
transformers' TimmWrapper (config.json's `architecture` and `pretrained_cfg`) and gives the network's raw
single-view probabilities, equal to timm's own on the same images: no calibration, views, threshold or gate."""
import json
import os

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.helpers import REPO

transformers = pytest.importorskip("transformers")  # the [hf] extra; .ci/run installs it
BUNDLE = REPO / "weights" / "pneumonia-resnet50"
EXAMPLES = sorted((REPO / "examples").glob("*.jpeg"))


@pytest.fixture(scope="module")
def timm_probabilities():
    """What timm alone gives: the architecture from config.json, the weights from model.safetensors, timm's own
    eval transform from pretrained_cfg."""
    config = json.loads((BUNDLE / "config.json").read_text())
    model = timm.create_model(config["architecture"], num_classes=config["num_classes"], **config.get("model_args", {}))
    model.load_state_dict({k: v.float() for k, v in load_file(BUNDLE / "model.safetensors").items()})
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(config["pretrained_cfg"]), is_training=False)
    with torch.no_grad():
        logits = model(torch.stack([transform(Image.open(p).convert("RGB")) for p in EXAMPLES]))
    return logits.softmax(-1), config["label_names"]


def test_the_pipeline_gives_timms_raw_probabilities_on_the_examples(timm_probabilities, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = transformers.pipeline("image-classification", model=str(BUNDLE), device="cpu")
    expected, labels = timm_probabilities
    assert len(EXAMPLES) == 4
    for path, row in zip(EXAMPLES, expected):
        scores = {r["label"]: r["score"] for r in pipe(Image.open(path).convert("RGB"), top_k=len(labels))}
        assert sorted(scores) == sorted(labels)
        for index, label in enumerate(labels):
            assert scores[label] == pytest.approx(float(row[index]), abs=1e-4), (path.name, label)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
