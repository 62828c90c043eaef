"""Run with HF_HUB_OFFLINE=1 and HF_HUB_CACHE set (huggingface_hub reads both when it is imported): what a user's
process loads from the Hub cache by a repo id, through this library, timm's hf-hub: loader and a revision, and what
it is told for a repo that is not cached. Prints one JSON object.

    python tests/offline_hub_probe.py REPO_ID IMAGE[,IMAGE...]
"""
import json
import sys

import timm
import torch

from modeling import ModelLoadError, PneumoniaClassifier, Predictor, eval_transform, load_rgb

repo_id, paths = sys.argv[1], sys.argv[2].split(",")
images = [load_rgb(path) for path in paths]
ours = PneumoniaClassifier.from_pretrained(repo_id).eval()
theirs = timm.create_model(f"hf-hub:{repo_id}", pretrained=True).eval()
batch = torch.stack([eval_transform(ours.config)(image) for image in images])
predictor, older = Predictor.from_pretrained(repo_id), Predictor.from_pretrained(repo_id, revision="v0")
try:
    PneumoniaClassifier.from_pretrained("someone/not-cached")
    uncached = "loaded"
except ModelLoadError as error:
    uncached = f"ModelLoadError | {error}"
with torch.no_grad():
    print(json.dumps({
        "threshold": ours.config.threshold, "architecture": ours.config.architecture,
        "v0_network_threshold": PneumoniaClassifier.from_pretrained(repo_id, revision="v0").config.threshold,
        "logits": ours(batch).tolist(), "timm_logits": theirs(batch).tolist(),
        "timm_num_classes": theirs.num_classes, "timm_label_names": list(theirs.pretrained_cfg.get("label_names", [])),
        "timm_input_size": list(theirs.pretrained_cfg["input_size"]),
        "probabilities": predictor.probabilities(images).tolist(), "has_detector": predictor.ood is not None,
        "v0_threshold": older.config.threshold, "uncached": uncached}))
