"""A deep ensemble: networks trained alike from different seeds, their class probabilities averaged.

Averaging independently trained networks is the best-documented defence under dataset shift
(Lakshminarayanan et al. 2017; Ovadia et al. 2019). Here the ensemble is the teacher that one network is
distilled from (`train.py --teachers`) and the reference the bundled student is reported beside:

    ensemble, split_file = load_ensemble(["runs/r50-sb-seed1", "runs/r50-sb-seed2", "runs/r50-sb-seed3"])
    predictor = calibrated_predictor(ensemble, data, split_file)   # temperature and threshold from validation

`Ensemble` has the network's interface (`PneumoniaClassifier`): its logits are the log of the members' mean
probabilities, so softmax, temperature scaling and every consumer of logits read it as one network, and
Grad-CAM differentiates the members' mean logit against their last feature maps side by side: the ensemble's
map is the mean of the members' maps before the ReLU.
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .artifacts import split_fingerprint_of
from .calibration import operating_point
from .evaluation import predict_split
from .files import SPLIT_NAME, WEIGHTS_NAME, ModelLoadError, file_sha256, source_network_folder
from .hub import epoch_cost
from .inference import Predictor
from .model import PneumoniaClassifier

# how the ensemble is run: it is a teacher and a reference, never deployed, so in the precision its networks were
# trained in and on the image alone (as they were validated while training), its threshold by the prior rule
ENSEMBLE_PRECISION = "bfloat16"
THRESHOLD_RULE = "prior"


class Ensemble(nn.Module):
    """The mean class probabilities of `members`, networks that read images alike (labels, size, normalisation)."""

    def __init__(self, members: Sequence[PneumoniaClassifier]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one network")
        first = members[0].config
        reads = ("label_names", "positive_label", "image_size", "mean", "std", "interpolation")
        for member in members[1:]:
            differs = [name for name in reads if getattr(member.config, name) != getattr(first, name)]
            if differs:
                raise ModelLoadError(f"The ensemble's networks read images differently ({', '.join(differs)}); "
                                     "ensemble networks trained alike.")
        self.members = nn.ModuleList(members)
        # the members' own calibration and deployment do not carry over to their mean
        self.config = replace(first, threshold=0.5, temperature=1.0, precision="float32", tta_views=[], ood={},
                              quantization={}, xray_gate={}, validation={})

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(pixel_values)[0]

    def forward_with_feature_map(self, pixel_values: torch.Tensor
                                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log of the mean probabilities, the members' OOD features side by side, their last feature maps side by
        side along the channels). The joint map is what the members' heads read, so that Grad-CAM of the ensemble's
        logit can differentiate against it."""
        stages = [member.forward_stages(pixel_values) for member in self.members]
        joint = torch.cat([final for final, _ in stages], dim=1)
        finals = joint.split([final.shape[1] for final, _ in stages], dim=1)
        heads = [member.forward_from_stages(final, intermediates)
                 for member, final, (_, intermediates) in zip(self.members, finals, stages)]
        member_logits = torch.stack([logits.float() for logits, _ in heads])
        mean_probs_log = torch.logsumexp(member_logits.log_softmax(-1), dim=0) - math.log(len(self.members))
        # the value is the log of the mean probabilities; the gradient (only Grad-CAM asks for one) is that of the
        # members' mean logit, the class score Grad-CAM reads of a single network: the ensemble's map is then the
        # mean of the members' maps before the ReLU, and an ensemble of one network has exactly that network's map
        mean_logits = member_logits.mean(0)
        logits = mean_logits + (mean_probs_log - mean_logits).detach()
        return logits, torch.cat([features for _, features in heads], dim=1), joint

    def forward_with_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features, _ = self.forward_with_feature_map(pixel_values)
        return logits, features

    def feature_sizes(self) -> list[int]:
        return [size for member in self.members for size in member.feature_sizes()]

    def feature_stages(self) -> list[str]:
        return [f"network {i + 1} {stage}" for i, member in enumerate(self.members) for stage in member.feature_stages()]


def load_ensemble(run_dirs: Sequence[str | Path]) -> tuple[Ensemble, Path]:
    """(the ensemble of these training runs' networks, the split.json they share). Runs trained on other splits are
    refused: the ensemble's validation side must be unseen by every member."""
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    split_files = [run_dir / SPLIT_NAME for run_dir in run_dirs]
    for run_dir, split_file in zip(run_dirs, split_files):
        if not split_file.exists():
            raise ModelLoadError(f"{run_dir} has no {SPLIT_NAME}, so its validation images are unknown.")
    if len({split_fingerprint_of(split_file) for split_file in split_files}) > 1:
        raise ModelLoadError("The ensemble's networks were trained on different train/validation splits; "
                             "train them with the same --split-file.")
    members = [PneumoniaClassifier.from_pretrained(source_network_folder(run_dir)) for run_dir in run_dirs]
    return Ensemble(members), split_files[0]


def run_summary(log: dict[str, Any]) -> dict[str, Any]:
    """How a run was trained, from its training_log.json: command, seed, commit, device and training hours."""
    cost = epoch_cost(log)
    return {"command": log.get("command"), "seed": log["args"].get("seed"), "commit": log.get("commit"),
            "device": cost["device"], "on": cost["on"], "hours": cost["hours"], "median_hours": cost["median_hours"]}


def member_records(run_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """What a distilled network's training log keeps of each teacher, so that its card can give the commands, seeds
    and hours that made them: each run's command, seed, commit, device, training hours and weights' sha256."""
    records = []
    for run_dir in map(Path, run_dirs):
        log_file = run_dir / "training_log.json"
        if not log_file.exists():
            raise ModelLoadError(f"{run_dir} has no training_log.json: its training has not finished.")
        log = json.loads(log_file.read_text())
        records.append({"run": str(run_dir), **run_summary(log), "batch_size": log["args"].get("batch_size"),
                        "weights_sha256": file_sha256(source_network_folder(run_dir) / WEIGHTS_NAME)})
    return records


def calibrated_predictor(ensemble: Ensemble, data: str, split_file: Path, device: torch.device | str | None = None,
                         target_sensitivity: float = 0.95) -> Predictor:
    """The ensemble as it is evaluated: `ENSEMBLE_PRECISION`, the image alone, its temperature fitted on the
    validation side of `split_file` and its threshold by `THRESHOLD_RULE`, as `modeling.finalize` fits a network's.
    The ensemble's config takes them, with what they gave on validation (`validation`)."""
    predictor = Predictor(ensemble, device=device, precision=ENSEMBLE_PRECISION, views=[])
    labels, logits, _ = predict_split(predictor, data, split_file, "validation")
    point = operating_point(logits, labels, ensemble.config.positive_index, THRESHOLD_RULE, target_sensitivity)
    temperature, threshold = point.pop("temperature"), point.pop("threshold")
    ensemble.config = replace(ensemble.config, precision=ENSEMBLE_PRECISION, temperature=temperature,
                              threshold=threshold, validation={**point, "split_sha256": split_fingerprint_of(split_file),
                                                               "members": len(ensemble.members)})
    return Predictor(ensemble, device=device, precision=ENSEMBLE_PRECISION, views=[])
