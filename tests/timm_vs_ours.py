"""Run with HF_HUB_OFFLINE=1 and HF_HUB_CACHE set: logits of timm's hf-hub loader and ours on the same images."""
import json
import sys

import timm
import torch

from modeling import PneumoniaClassifier, eval_transform, load_rgb

repo_id, images = sys.argv[1], sys.argv[2].split(",")
ours = PneumoniaClassifier.from_pretrained(repo_id).eval()
theirs = timm.create_model(f"hf-hub:{repo_id}", pretrained=True).eval()
batch = torch.stack([eval_transform(ours.config)(load_rgb(path)) for path in images])
with torch.no_grad():
    print(json.dumps({"ours": ours(batch).tolist(), "timm": theirs(batch).tolist(),
                      "timm_num_classes": theirs.num_classes,
                      "timm_label_names": list(theirs.pretrained_cfg.get("label_names", [])),
                      "timm_input_size": list(theirs.pretrained_cfg["input_size"]),
                      "threshold": ours.config.threshold}))
