"""Every transfer syntax a PACS sends, on the image files pydicom ships (pydicom/data/test_files).

Each file whose pixels pydicom decodes with the installed plugins (pylibjpeg's libjpeg, openjpeg and RLE; pyjpegls)
is read; the rest, and images below the minimum size, get a clear refusal. A compressed file and its uncompressed
twin give the bundled model's same probability. The twin is decoded by another program: dcmtk's dcmdjpeg, dcmdrle
and dcmdjpls (Debian's dcmtk) for JPEG, RLE and JPEG-LS; for JPEG 2000, which dcmtk does not read, the uncompressed
original that pydicom ships beside it.
"""
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, JPEGTransferSyntaxes, RLELossless

from modeling import PneumoniaClassifier, Predictor
from modeling.runtime.preprocessing import MIN_SIDE, ImageLoadError, read_image, to_rgb
from tests.helpers import REPO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's test files are odd on purpose
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DECOMPRESSORS = {**{uid: "dcmdjpeg" for uid in JPEGTransferSyntaxes}, RLELossless: "dcmdrle",
                 **{uid: "dcmdjpls" for uid in JPEGLSTransferSyntaxes}}
SHIPPED_TWINS = {"MR_small_jp2klossless.dcm": "MR_small.dcm"}  # JPEG 2000 with its uncompressed original
UNCOMPRESSED_VARIANTS = ["MR_small_bigendian.dcm", "MR_small_expb.dcm", "MR_small_implicit.dcm", "MR_small_padded.dcm"]


def _header(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path)
        except Exception:  # noqa: BLE001 - not every file there is a DICOM file
            return None


IMAGE_FILES = sorted(p for p in TEST_FILES.rglob("*") if p.is_file() and (d := _header(p)) is not None
                     and "PixelData" in d)


def _decodable(dataset) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _ = dataset.pixel_array
        except Exception:  # noqa: BLE001 - each plugin raises its own types
            return False
    return min(int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)) >= MIN_SIDE


@pytest.fixture(scope="module")
def bundle():
    """The bundled network on each image alone: its views would repeat the same comparison of two decodings."""
    return Predictor(PneumoniaClassifier.from_pretrained(REPO / "weights" / "pneumonia-resnet50"), views=[])


def p_pneumonia(predictor, paths: list[Path]) -> dict[Path, float]:
    """P(pneumonia) of each file, the network run once on each distinct decoded image (most twins decode to the
    very same pixels, which give the very same probability)."""
    decoded = {path: to_rgb(read_image(path)) for path in paths}
    distinct = {(image.size, image.tobytes()): image for image in decoded.values()}
    probabilities = predictor.probabilities(list(distinct.values()), batch_size=8)[:, predictor.config.positive_index]
    p_of = dict(zip(distinct, probabilities.tolist(), strict=True))
    return {path: p_of[image.size, image.tobytes()] for path, image in decoded.items()}


def test_pydicom_ships_compressed_images_of_every_family():
    syntaxes = {str(_header(p).file_meta.get("TransferSyntaxUID", "")) for p in IMAGE_FILES}
    for family in (JPEGTransferSyntaxes, JPEGLSTransferSyntaxes, JPEG2000TransferSyntaxes, [RLELossless]):
        assert syntaxes & set(family)
    assert len(IMAGE_FILES) >= 60


@pytest.mark.parametrize("path", IMAGE_FILES, ids=lambda p: p.relative_to(TEST_FILES).as_posix())
def test_each_file_pydicom_decodes_is_read_and_the_rest_refused_in_a_sentence(path):
    if _decodable(_header(path)):
        image = to_rgb(read_image(path))
        assert min(image.size) >= MIN_SIDE
    else:
        with pytest.raises(ImageLoadError) as refusal:
            read_image(path)
        message = str(refusal.value)
        assert str(TEST_FILES) not in message and not re.search(r"0x[0-9a-f]{6,}", message)  # no path, no object


def _twins(tmp: Path) -> list[tuple[str, Path, Path]]:
    pairs = []
    for path in IMAGE_FILES:
        dataset = _header(path)
        syntax = dataset.file_meta.get("TransferSyntaxUID")
        if not _decodable(dataset):
            continue
        if path.name in SHIPPED_TWINS:
            pairs.append((path.name, path, TEST_FILES / SHIPPED_TWINS[path.name]))
        elif path.name in UNCOMPRESSED_VARIANTS:
            pairs.append((path.name, path, TEST_FILES / "MR_small.dcm"))
        elif syntax in DECOMPRESSORS:
            twin = tmp / f"{path.stem}-{DECOMPRESSORS[syntax]}.dcm"
            done = subprocess.run([DECOMPRESSORS[syntax], str(path), str(twin)], capture_output=True)
            if done.returncode == 0:
                pairs.append((path.name, path, twin))
    return pairs


def test_a_compressed_file_and_its_uncompressed_twin_give_the_same_probability(bundle, tmp_path):
    if shutil.which("dcmdjpeg") is None:
        pytest.skip("Debian's dcmtk (dcmdjpeg, dcmdrle, dcmdjpls) is not installed; .ci/run installs it")
    pairs = _twins(tmp_path)
    decoded_by = {_header(p).file_meta.TransferSyntaxUID for _, p, _ in pairs}
    for family in (JPEGTransferSyntaxes, JPEGLSTransferSyntaxes, JPEG2000TransferSyntaxes, [RLELossless]):
        assert decoded_by & set(family), family
    p = p_pneumonia(bundle, sorted({path for _, compressed, twin in pairs for path in (compressed, twin)}))
    differences = {name: abs(p[compressed] - p[twin]) for name, compressed, twin in pairs}
    assert max(differences.values()) < 1e-3, {k: v for k, v in differences.items() if v >= 1e-3}
