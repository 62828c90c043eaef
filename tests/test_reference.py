"""The reference outputs beside the weights, and the load-time check of the deployed precision against them: the
bundle answers as its network does on every CPU, falling back from a path whose kernels disagree."""
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from modeling import ModelLoadError, Predictor
from modeling.runtime import reference as reference_module
from modeling.runtime.reference import REFERENCE_NAME, TOLERANCE, load_reference, outputs_of
from tests.helpers import REPO, run_script

BUNDLE = REPO / "weights" / "pneumonia-resnet50"
HAS_VNNI = "avx512_vnni" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False


@pytest.fixture(scope="module")
def fp32_bundle():
    return Predictor.from_pretrained(BUNDLE, precision="float32")


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    shutil.copytree(BUNDLE, folder, ignore=shutil.ignore_patterns("eval*", "xray_gate_eval", "*.png"))
    return folder


def test_the_bundle_ships_its_networks_own_answers_on_the_examples(fp32_bundle):
    reference = load_reference(BUNDLE / REFERENCE_NAME)
    assert reference.names == sorted(p.name for p in (REPO / "examples").glob("*.jpeg"))
    assert reference.metadata["made_with"].startswith("float32")
    ours = outputs_of(fp32_bundle, reference.tensors["pixels"])
    for name, tolerance in TOLERANCE.items():  # float32 reproduces them on this CPU, whichever CPU made them
        assert np.abs(ours[name] - reference.tensors[name].numpy()).max() < tolerance / 10, name
    probabilities = reference.tensors["probability"].numpy()
    assert [p > 0.5 for p in probabilities] == ["pneumonia" in name for name in reference.names]


def test_what_loads_reproduces_the_reference_and_says_which_path_runs(caplog):
    with caplog.at_level(logging.WARNING, logger="modeling.runtime.inference"):
        predictor = Predictor.from_pretrained(BUNDLE)
    reference = load_reference(BUNDLE / REFERENCE_NAME)
    assert reference_module.disagreement(predictor, reference) is None
    if predictor.precision == predictor.config.precision:
        assert predictor.reference_check == f"{predictor.precision} reproduces the reference outputs"
        assert not caplog.records
    else:  # this CPU's int8 disagreed: one sentence says so, and what runs instead
        assert predictor.reference_check.startswith(f"{predictor.config.precision} disagreed")
        [record] = caplog.records
        assert record.getMessage().count(". ") == 0 and f"running {predictor.precision} instead" in record.getMessage()


def test_a_folder_without_reference_loads_and_says_it_was_not_checked(tmp_path, caplog):
    folder = _copy(tmp_path)
    (folder / REFERENCE_NAME).unlink()
    with caplog.at_level(logging.WARNING, logger="modeling.runtime.inference"):
        predictor = Predictor.from_pretrained(folder, check_reference=True)
    assert predictor.reference_check == f"not checked: the folder has no {REFERENCE_NAME}"
    assert any(REFERENCE_NAME in record.getMessage() for record in caplog.records)


def test_reference_outputs_no_path_reproduces_refuse_the_folder(tmp_path):
    folder = _copy(tmp_path)
    with safe_open(str(folder / REFERENCE_NAME), framework="pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    tensors["probability"] = 1 - tensors["probability"]  # every answer turned round
    save_file(tensors, str(folder / REFERENCE_NAME), metadata=metadata)
    with pytest.raises(ModelLoadError, match="No precision reproduces the model folder's reference outputs"):
        Predictor.from_pretrained(folder)


def test_a_damaged_reference_file_is_refused_in_one_sentence(tmp_path):
    folder = _copy(tmp_path)
    (folder / REFERENCE_NAME).write_bytes((folder / REFERENCE_NAME).read_bytes()[:500])
    with pytest.raises(ModelLoadError, match="not a readable safetensors file") as error:
        Predictor.from_pretrained(folder)
    assert str(tmp_path) not in str(error.value)


def bundle_int8_verdict() -> None:
    """Print whether the bundle's network in int8 reproduces its reference outputs on this CPU: each image alone,
    as the check runs it, with activation ranges from 8 of the training images the suite ships."""
    import torch

    from modeling.runtime.preprocessing import load_rgb, normalize, resize_transform
    from modeling.runtime.quantize import calibrate

    deployed = Predictor.from_pretrained(BUNDLE, precision="float32")
    config = deployed.config
    images = sorted((REPO / "tests" / "data" / "kermany" / "train").glob("*/*.jpeg"))[::10][:8]  # both classes
    pixels = torch.stack([resize_transform(config)(load_rgb(path)) for path in images])
    batches = [normalize(pixels[i:i + 8], config) for i in range(0, len(pixels), 8)]
    int8 = Predictor(deployed.model, ood=deployed.ood, xray_gate=deployed.xray_gate, precision="int8",
                     int8_calibration=calibrate(deployed.model, batches), views=[])
    missed = reference_module.disagreement(int8, load_reference(BUNDLE / REFERENCE_NAME))
    print("agrees" if missed is None else f"disagrees: {missed}")


@pytest.mark.slow
def test_a_cpu_without_vnni_does_not_reproduce_the_network_in_int8():
    """oneDNN told to use AVX2 at most (ONEDNN_MAX_CPU_ISA), as a CPU without AVX512 and VNNI: there the bundle's
    network in int8 misses its reference outputs, which is what the load-time check catches (its fallback:
    tests/test_quantize.py), and why the bundle deploys float32."""
    result = run_script("-c", "from tests.test_reference import bundle_int8_verdict; bundle_int8_verdict()",
                        env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"})
    verdict = result.stdout.strip().splitlines()[-1]
    assert verdict == "agrees" or verdict.startswith("disagrees: ")
    if not HAS_VNNI:  # this CPU lacks VNNI whatever oneDNN is told: its int8 sums saturate
        assert verdict.startswith("disagrees: ")
