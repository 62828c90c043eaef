"""The inference pipeline's device and precision decisions, and that inputs follow the model's device."""
import pytest
import torch
from PIL import Image

from modeling import Predictor
from modeling.runtime.inference import autocast, default_device, fast_bf16, runtime_precision

BF16 = "bfloat16" if fast_bf16(torch.device("cpu")) else "float32"  # what this CPU runs bf16 models in


@pytest.mark.parametrize("precision, device, runs", [
    ("int8", "cpu", "int8"), ("int8", "cuda", "bfloat16"),  # int8 kernels are the CPU's; a GPU runs bf16
    ("bfloat16", "cuda", "bfloat16"), ("float32", "cuda", "float32"), ("float32", "cpu", "float32"),
    ("bfloat16", "cpu", BF16),  # a CPU without bf16 kernels runs fp32 instead
])
def test_runtime_precision(precision, device, runs, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)  # as on the GPUs we use
    assert runtime_precision(precision, torch.device(device)) == runs


@pytest.mark.parametrize("accelerator, expected", [(None, "cpu"), ("cuda", "cuda"), ("xpu", "xpu")])
def test_default_device_is_the_accelerator_when_there_is_one(accelerator, expected, monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: accelerator is not None)
    monkeypatch.setattr(torch.accelerator, "current_accelerator",
                        lambda *args, **kwargs: torch.device(accelerator) if accelerator else None)
    assert default_device() == torch.device(expected)


def test_autocast_is_bf16_for_bf16_and_for_int8_eager_paths_where_bf16_is_fast():
    with autocast("bfloat16", torch.device("cpu")):  # asked for explicitly: bf16 whatever the CPU
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with autocast("int8", torch.device("cpu")):  # Grad-CAM of an int8 model: bf16 where this CPU runs it fast
        assert torch.is_autocast_enabled("cpu") == (BF16 == "bfloat16")
    with autocast("float32", torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")


def test_inputs_follow_the_model_to_its_device(tiny_model_dir):
    """On the `meta` device (shapes only, no arithmetic) a CPU image still reaches the network: every input is
    moved to where the Predictor put the model, as it would be to a GPU."""
    predictor = Predictor.from_pretrained(tiny_model_dir, device="meta")
    assert predictor.device.type == "meta" and next(predictor.model.parameters()).device.type == "meta"
    pixels = predictor.tensor(Image.new("L", (300, 280), 90))
    assert pixels.device.type == "meta" and pixels.shape == (1, 3, 64, 64)
    logits, features = predictor.logits_and_features(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))  # from the CPU
    assert logits.device.type == "meta" and logits.shape == (2, 2) and features.shape[0] == 2


def test_cpu_predictor_gives_calibrated_probabilities_and_verdicts(tiny_model_dir):
    predictor = Predictor.from_pretrained(tiny_model_dir, device="cpu")
    analysis = predictor.analyse([Image.new("L", (256, 256), 128), Image.new("RGB", (200, 220), (10, 90, 200))])
    assert analysis.probabilities.shape == (2, 2) and abs(analysis.probabilities.sum(1) - 1).max() < 1e-6
    assert len(analysis.verdicts) == 2 and analysis.in_distribution.dtype == bool
    heatmap = predictor.grad_cam(Image.new("L", (256, 256), 128))
    assert heatmap.shape == (64, 64) and 0 <= heatmap.min() <= heatmap.max() <= 1


def test_a_deployment_is_read_in_one_step_with_every_artifact_checked():
    from modeling.runtime.deployment import load_deployment
    from tests.helpers import REPO
    bundle = REPO / "weights" / "pneumonia-resnet50"
    parts = load_deployment(bundle)
    assert parts.folder == bundle and parts.config.architecture == "resnet50"
    assert parts.ood is not None and parts.xray_gate is not None and parts.reference is not None
    assert parts.expected["weights_sha256"] == parts.reference.fitted_for["weights_sha256"]
    assert load_deployment(bundle, reference=False).reference is None
