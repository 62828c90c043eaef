"""The replacement rule: whether a training window's candidate replaces the bundled model. It was written before any
candidate's test figures were seen, and reads validation and the shortcut scores alone. The candidate replaces the
bundled model when, on the validation side of their common split:
1. its network's calibrated log-loss on the images as they are is at most `AS_IS_MARGIN` above the bundled network's
   (validation carved from train flatters what surrounds the thorax: a network that stops using it may lose a
   little there, and is meant to);
2. its network's calibrated log-loss averaged over the robustness changes is at most the bundled network's;
3. blacking out everything outside the thorax flips at most as many decisions as the bundled model's, and so does
   cropping to the thorax (each as deployed);
4. its PNEUMONIA-class Grad-CAM share inside the lung fields, on PNEUMONIA images, is at least the bundled model's
   less `GRADCAM_MARGIN`.
Log-losses are the networks' own (`modeling.training.finalize.view_scores`: float32, the image alone, the temperature
fitted on validation as it is), so the decision does not depend on the CPU or the deployed precision.
`scripts/publish_bundle.py` applies it and records the decision.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..runtime.files import SPLIT_NAME, file_sha256, write_json_atomic
from ..training.run_log import shown

AS_IS_MARGIN = 0.10  # relative
GRADCAM_MARGIN = 0.02  # absolute share


def replaces(candidate: dict[str, Any], bundled: dict[str, Any]) -> tuple[bool, list[dict[str, Any]]]:
    """The rule: whether the candidate replaces the bundled model, and each criterion with both sides' values.
    Each argument: {"as_is", "changes" (calibrated log-losses), "flipped_black", "flipped_crop",
    "gradcam_in_lungs_pneumonia"}."""
    criteria = [
        ("validation calibrated log-loss, as is", candidate["as_is"], bundled["as_is"],
         candidate["as_is"] <= bundled["as_is"] * (1 + AS_IS_MARGIN), f"at most {AS_IS_MARGIN:.0%} above"),
        ("validation calibrated log-loss, mean over the robustness changes", candidate["changes"], bundled["changes"],
         candidate["changes"] <= bundled["changes"], "at most"),
        ("decisions flipped, outside the thorax black", candidate["flipped_black"], bundled["flipped_black"],
         candidate["flipped_black"] <= bundled["flipped_black"], "at most"),
        ("decisions flipped, cropped to the thorax", candidate["flipped_crop"], bundled["flipped_crop"],
         candidate["flipped_crop"] <= bundled["flipped_crop"], "at most"),
        ("Grad-CAM share inside the lung fields, PNEUMONIA images", candidate["gradcam_in_lungs_pneumonia"],
         bundled["gradcam_in_lungs_pneumonia"],
         candidate["gradcam_in_lungs_pneumonia"] >= bundled["gradcam_in_lungs_pneumonia"] - GRADCAM_MARGIN,
         f"at least, less {GRADCAM_MARGIN}"),
    ]
    rows = [{"criterion": name, "candidate": new, "bundled": old, "holds": bool(holds), "needs": needs}
            for name, new, old, holds, needs in criteria]
    return all(row["holds"] for row in rows), rows


def network_scores(model_dir: Path, data: str, cache: Path) -> dict[str, Any]:
    """The network's validation log-losses (`modeling.training.finalize.view_scores`, the image alone), computed once per
    weights file and kept in `cache`."""
    weights = file_sha256(model_dir / "model.safetensors")
    if cache.exists() and json.loads(cache.read_text()).get("weights_sha256") == weights:
        return json.loads(cache.read_text())
    from modeling.runtime.model import PneumoniaClassifier
    from modeling.training.finalize import view_scores

    network = PneumoniaClassifier.from_pretrained(model_dir)
    scores = view_scores(network, data, model_dir / SPLIT_NAME, {"the image alone": []})["the image alone"]
    record = {"model": shown(model_dir), "weights_sha256": weights, "as_is": scores["per_change"]["as is"],
              "changes": sum(v for k, v in scores["per_change"].items() if k != "as is") / (len(scores["per_change"]) - 1),
              "per_change": scores["per_change"]}
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache, record)
    return record


def rule_inputs(model_dir: Path, shortcuts: Path, data: str, cache: Path) -> dict[str, Any]:
    scores = json.loads(shortcuts.read_text())
    return {**{k: v for k, v in network_scores(model_dir, data, cache).items() if k in ("as_is", "changes")},
            "flipped_black": scores["outside_thorax_black"]["flipped"],
            "flipped_crop": scores["cropped_to_thorax"]["flipped"],
            "gradcam_in_lungs_pneumonia": scores["gradcam_in_lungs_pneumonia"]}
