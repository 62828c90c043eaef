"""Score an archive: a reading worklist from a folder, a glob, a list file or a Hugging Face dataset.

    python predict.py ARCHIVE_DIR --output worklist.csv [--model DIR_OR_ID] [--threshold T] [--format parquet]
    python predict.py "exports/**/*.dcm" --output worklist.csv --heatmaps heatmaps/
    python predict.py studies.txt --output worklist.csv            # one path per line, relative to the list
    python predict.py hf-vision/chest-xray-pneumonia --split test --output worklist.csv
    python predict.py PACS_EXPORT --output studies.csv --per study --dicom-sr sr/ --dicom-heatmaps sc/
    accelerate launch --num_processes 8 predict.py ARCHIVE_DIR --output worklist.csv   # 8 GPUs (or CPU processes)

One row per file, in the demo's worklist order (`modeling.runtime.worklist`): highest P(pneumonia) first, then the
images unlike the training X-rays, then those that are not chest X-rays, then the files that could not be read,
each with its reason. Columns: rank, path (below the input root), p_pneumonia, decision (at the model's
threshold or --threshold), verdict, result (the demo's wording), and for DICOM the study, series and SOP instance UIDs and the
header's warnings. Every number comes from the same `Predictor` as the demo's.

DICOM: the header is checked before any pixel is read (`modeling.runtime.dicom`): not a radiograph or not a
frontal view is refused with its reason; an age outside the training population, a body part other than the chest,
several frames, no Study Instance UID, or a SOP Instance UID seen in an earlier file are warnings. `--per study`
gives one row per study instead: its P(pneumonia) is its most suspicious assessed image's, named in the row.
`--dicom-sr DIR` writes one Structured Report per study with an image assessed, and `--dicom-heatmaps DIR` a
Secondary Capture of each flagged image's heat map, both in the images' study (`modeling.runtime.dicom_results`).

Big inputs: files are listed lazily, in chunks of --shard-size; decoding runs in DataLoader worker processes and
the network gets batches; memory stays bounded by the chunk. Each chunk's rows are written to
OUTPUT.parts/ as one file, atomically, so a run stopped at any moment (Ctrl-C, SIGTERM, SIGKILL) and started
again with the same command continues where it stopped and writes the same worklist. Under `accelerate launch`
each chunk is split between the processes (`split_between_processes`), and the first process merges the
sorted parts into the worklist. For a cluster, run one such command per machine on its own slice of the
archive (a list file each) and merge the worklists by p_pneumonia.
"""
from __future__ import annotations

import argparse
import csv
import glob
import heapq
import itertools
import json
import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from modeling.runtime.host import use_tcmalloc

if __name__ == "__main__":
    use_tcmalloc()  # before torch is imported (see modeling/runtime/host.py)

import numpy as np
import pydicom
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from modeling.runtime.dicom import HeaderCheck, read_header
from modeling.runtime.dicom_results import ImageResult, ModelIdentity, heatmap_capture, study_report, write_atomic
from modeling.runtime.display import overlay, preview
from modeling.runtime.files import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    ModelLoadError,
    file_sha256,
    file_written_whole,
    looks_like_path,
    resolve_model_folder,
    write_json_atomic,
)
from modeling.runtime.inference import Predictor
from modeling.runtime.ood import NOT_AN_XRAY
from modeling.runtime.preprocessing import ImageLoadError, read_image, to_rgb
from modeling.runtime.worklist import (
    ASSESSED,
    UNREADABLE,
    Entry,
    header_fields,
    make_entry,
    refused_entry,
    sort_key,
    studies,
)

SKIPPED_NAMES = {"DICOMDIR", "Thumbs.db"}  # what an archive holds beside its images
COLUMNS = ["rank", "path", "p_pneumonia", "decision", "verdict", "result", "study_instance_uid", "series_instance_uid",
           "sop_instance_uid", "warnings"]
STUDY_COLUMNS = ["rank", "study_instance_uid", "p_pneumonia", "decision", "verdict", "result", "image", "images",
                 "assessed", "warnings"]
PART_FIELDS = [f.name for f in fields(Entry)]
PARTS_VERSION = 2  # parts written by another version of this file are not continued


class InputError(RuntimeError):
    """The input could not be listed; the message says what to do."""


@dataclass(frozen=True)
class Item:
    order: int
    name: str  # the path below the input root (or the dataset's own name for the image)
    source: Any  # a file path, or an index into a Hub dataset


# --- listing, lazily and in a fixed order


def _walk(root: Path) -> Iterator[Path]:
    """Files below `root`, depth first, each folder's entries sorted by name; hidden ones skipped."""
    with os.scandir(root) as scan:
        entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))
        elif entry.is_file() and entry.name not in SKIPPED_NAMES:
            yield Path(entry.path)


def list_inputs(source: str, split: str) -> tuple[Iterable[Item], Optional[int], Any]:
    """(items, how many there are where counting is cheap, the Hub dataset or None)."""
    if os.path.isdir(source):
        root = Path(source)
        def items() -> Iterator[Item]:
            for order, path in enumerate(_walk(root)):
                yield Item(order, path.relative_to(root).as_posix(), str(path))
        return items(), sum(1 for _ in _walk(root)), None
    if os.path.isfile(source):  # a list of paths, relative to the list's folder
        base = Path(source).parent
        lines = [line.strip() for line in Path(source).read_text(encoding="utf-8").splitlines()]
        paths = [line for line in lines if line and not line.startswith("#")]
        return (Item(i, p, str(base / p)) for i, p in enumerate(paths)), len(paths), None
    if glob.has_magic(source):
        paths = sorted(glob.glob(source, recursive=True))
        parts = Path(source).parts
        root = Path(*itertools.takewhile(lambda part: not glob.has_magic(part), parts)) if not glob.has_magic(parts[0]) \
            else Path(".")
        files = [p for p in paths if os.path.isfile(p)]
        return (Item(i, os.path.relpath(p, root).replace(os.sep, "/"), p) for i, p in enumerate(files)), len(files), None
    if looks_like_path(source):
        raise InputError(f"{source} is neither a folder, a list file nor a glob that matches; check the path.")
    dataset = _hub_dataset(source, split)
    names = dataset["image"]
    return ((Item(i, (record.get("path") or f"{split}/{i:08d}"), i) for i, record in enumerate(names)),
            len(dataset), dataset)


def _hub_dataset(source: str, split: str):
    from datasets import Image as ImageFeature
    from datasets import load_dataset
    try:
        dataset = load_dataset(source, split=split)
    except Exception as error:  # noqa: BLE001 - offline and auth failures come as many types
        raise InputError(f"Could not load the dataset {source!r} (split {split!r}) from the Hugging Face Hub "
                         f"({type(error).__name__}); connect to the internet or pass a local folder.") from None
    column = next((name for name, feature in dataset.features.items() if isinstance(feature, ImageFeature)), None)
    if column is None:
        raise InputError(f"The dataset {source!r} has no image column.")
    return dataset.rename_column(column, "image").cast_column("image", ImageFeature(decode=False)) \
        if column != "image" else dataset.cast_column("image", ImageFeature(decode=False))


def chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# --- decoding, in DataLoader workers


class ArchiveImages(Dataset):
    """Items -> {"item", "check" (a DICOM header's, or None), "pixels" (network input) or "error" or neither (refused
    by its header), and a preview for heatmaps}."""

    def __init__(self, items: list[Item], transform, hub_dataset: Any = None, previews: bool = False):
        self.items, self.transform, self.hub_dataset, self.previews = items, transform, hub_dataset, previews

    def __len__(self) -> int:
        return len(self.items)

    def _bytes(self, item: Item) -> bytes:
        if self.hub_dataset is None:
            try:
                return Path(item.source).read_bytes()
            except OSError as error:
                raise ImageLoadError(f"The file could not be read ({error.strerror or type(error).__name__}).") from None
        record = self.hub_dataset[item.source]["image"]
        return record["bytes"] if record.get("bytes") else Path(record["path"]).read_bytes()

    def __getitem__(self, index: int) -> dict[str, Any]:
        item, check = self.items[index], None
        try:
            data = self._bytes(item)
            check = read_header(data)
            if check is not None and check.verdict is not None:
                return {"item": item, "check": check}  # refused before any pixel is read
            image = to_rgb(read_image(data))
        except ImageLoadError as error:
            return {"item": item, "check": check, "error": str(error)}
        result = {"item": item, "check": check, "pixels": self.transform(image)}
        if self.previews:
            result["preview"] = preview(image)
        return result


def as_list(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


# --- scoring one chunk


def score(predictor: Predictor, items: list[Item], hub_dataset: Any, args: argparse.Namespace,
          threshold: float, identity: ModelIdentity, bar: tqdm, processes: int) -> list[Entry]:
    heatmaps = Path(args.heatmaps) if args.heatmaps else None
    captures = Path(args.dicom_heatmaps) if args.dicom_heatmaps else None
    loader = DataLoader(ArchiveImages(items, predictor.transform, hub_dataset, previews=bool(heatmaps or captures)),
                        batch_size=args.batch_size or predictor.batch_size, num_workers=args.workers,
                        collate_fn=as_list)
    entries: list[Entry] = []
    positive = predictor.config.positive_index
    for batch in loader:
        readable = [record for record in batch if "pixels" in record]
        for record in batch:
            item, check = record["item"], record["check"]
            if "error" in record:
                entries.append(Entry(item.order, item.name, UNREADABLE, reason=record["error"], **header_fields(check)))
            elif "pixels" not in record:
                entries.append(refused_entry(item.order, item.name, check))
        if readable:
            pixels = torch.stack([record["pixels"] for record in readable])
            logits, features = predictor.logits_and_features(pixels)
            probabilities = predictor.probabilities_from_logits(logits)[:, positive]
            for record, p, verdict in zip(readable, probabilities, predictor.verdicts(features)):
                entry = make_entry(record["item"].order, record["item"].name, p, verdict, **header_fields(record["check"]))
                entries.append(entry)
                if (heatmaps or captures) and verdict != NOT_AN_XRAY and entry.probability >= threshold:
                    write_heatmaps(predictor, record, heatmaps, captures, identity)
        bar.update(len(batch) * processes)
    return entries


def write_heatmaps(predictor: Predictor, record: dict[str, Any], pngs: Optional[Path], captures: Optional[Path],
                   identity: ModelIdentity) -> None:
    """The Grad-CAM overlay of a flagged image: as a PNG under `pngs`, and for a DICOM with a study as a Secondary
    Capture under `captures`; each written under a temporary name and renamed."""
    picture = overlay(record["preview"], predictor.grad_cam(record["pixels"]))
    name = record["item"].name
    if pngs is not None:
        with file_written_whole(pngs / (name + ".png")) as tmp:
            picture.save(tmp, format="PNG")
    check: Optional[HeaderCheck] = record["check"]
    if captures is not None and check is not None and check.study_uid and check.sop_uid:
        header = pydicom.dcmread(record["item"].source, stop_before_pixels=True)
        write_atomic(heatmap_capture(header, np.asarray(picture.convert("RGB")), identity),
                     captures / (name if name.lower().endswith(".dcm") else name + ".dcm"))


# --- parts on disk, and the merged worklist


def write_part(entries: list[Entry], path: Path) -> None:
    with file_written_whole(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, PART_FIELDS)
        writer.writeheader()
        writer.writerows(asdict(entry) for entry in sorted(entries, key=sort_key))


def read_part(path: Path) -> Iterator[Entry]:
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            yield Entry(order=int(row["order"]), name=row["name"], verdict=row["verdict"],
                        probability=float(row["probability"]) if row["probability"] else None, reason=row["reason"],
                        study_uid=row["study_uid"], series_uid=row["series_uid"], sop_uid=row["sop_uid"],
                        warnings=row["warnings"])


def first_files(parts: list[Path]) -> dict[str, tuple[int, str]]:
    """SOP Instance UID -> (order, name) of the first file in the input that carries it."""
    first: dict[str, tuple[int, str]] = {}
    for path in parts:
        for entry in read_part(path):
            if entry.sop_uid and (entry.sop_uid not in first or entry.order < first[entry.sop_uid][0]):
                first[entry.sop_uid] = (entry.order, entry.name)
    return first


def merged_entries(parts: list[Path]) -> Iterator[Entry]:
    """The parts merged in worklist order (each part is sorted, so this streams), a later file of an earlier
    file's SOP Instance UID marked as its duplicate."""
    first = first_files(parts)
    for entry in heapq.merge(*(read_part(path) for path in parts), key=sort_key):
        if entry.sop_uid and first[entry.sop_uid][0] != entry.order:
            duplicate = f"same SOPInstanceUID as {first[entry.sop_uid][1]}: a duplicate, left out of the study results"
            entry.warnings = "; ".join(filter(None, [entry.warnings, duplicate]))
            entry.duplicate_of = first[entry.sop_uid][1]
        yield entry


def worklist_rows(entries: Iterable[Entry], threshold: float) -> Iterator[list[Any]]:
    for rank, entry in enumerate(entries, 1):
        yield [rank, entry.name, entry.probability, entry.decision(threshold), entry.verdict, entry.result(threshold),
               entry.study_uid, entry.series_uid, entry.sop_uid, entry.warnings]


def study_worklist_rows(entries: Iterable[Entry], threshold: float) -> Iterator[list[Any]]:
    for rank, study in enumerate(studies(entries), 1):
        chosen = study.chosen
        yield [rank, study.study_uid, chosen.probability, chosen.decision(threshold), chosen.verdict,
               study.result(threshold), chosen.name, len(study.entries), study.assessed, study.warnings]


def write_study_reports(entries: list[Entry], sources: dict[str, Any], identity: ModelIdentity, folder: Path) -> int:
    """One SR per study with an image assessed, its images' headers read again; returns how many were written."""
    written = 0
    for study in studies(entries):
        members = [e for e in study.counted if e.sop_uid]
        if not study.study_uid or not any(e.verdict in ASSESSED for e in members):
            continue
        results = [ImageResult(pydicom.dcmread(sources[e.name], stop_before_pixels=True), e.verdict, e.probability)
                   for e in sorted(members, key=lambda e: e.order)]
        write_atomic(study_report(results, identity), folder / f"{study.study_uid}.sr.dcm")
        written += 1
    return written


def write_worklist(rows: Iterator[list[Any]], output: Path, form: str, columns: list[str]) -> int:
    count = 0
    with file_written_whole(output) as tmp:
        if form == "csv":
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(columns)
                for row in rows:
                    writer.writerow(row)
                    count += 1
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq
            types = {"rank": pa.int64(), "p_pneumonia": pa.float64(), "images": pa.int64(), "assessed": pa.int64()}
            schema = pa.schema([(name, types.get(name, pa.string())) for name in columns])
            with pq.ParquetWriter(tmp, schema) as writer:
                for block in iter(lambda: list(itertools.islice(rows, 65536)), []):
                    writer.write_table(pa.Table.from_pylist([dict(zip(columns, row)) for row in block],
                                                            schema=schema))
                    count += len(block)
    return count


def run_record(args: argparse.Namespace, folder: Path, identity: ModelIdentity, processes: int) -> dict[str, Any]:
    """What the parts depend on: a rerun must match it to continue them."""
    heatmaps = bool(args.heatmaps or args.dicom_heatmaps)
    return {"parts_version": PARTS_VERSION, "input": args.input, "split": args.split, "shard_size": args.shard_size,
            "processes": processes, "weights_sha256": identity.weights_sha256,
            "config_sha256": file_sha256(folder / CONFIG_NAME), "heatmaps": args.heatmaps,
            "dicom_heatmaps": args.dicom_heatmaps, "heatmap_threshold": identity.threshold if heatmaps else None}


def model_identity(predictor: Predictor, args: argparse.Namespace, folder: Path, threshold: float) -> ModelIdentity:
    from importlib.metadata import PackageNotFoundError, version
    try:
        package_version = version("pneumonia-xray")
    except PackageNotFoundError:
        package_version = "unknown"
    rule = predictor.config.validation.get("threshold_rule", "") if args.threshold is None else "set by the user"
    return ModelIdentity(name=Path(args.model).name if looks_like_path(args.model) else args.model,
                         version=package_version, weights_sha256=file_sha256(folder / WEIGHTS_NAME),
                         threshold=threshold, threshold_rule=rule or "the model's own")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="a folder, a glob (quoted), a file listing paths, or a Hugging Face dataset id")
    p.add_argument("--output", required=True, type=Path, help="the worklist (.csv, or .parquet with --format parquet)")
    p.add_argument("--model", default="weights/pneumonia-resnet50", help="model folder or Hugging Face Hub id")
    p.add_argument("--threshold", type=float, help="decision threshold (default: the model's own)")
    p.add_argument("--format", default="csv", choices=["csv", "parquet"])
    p.add_argument("--heatmaps", help="also write the Grad-CAM overlay of each image flagged to this folder")
    p.add_argument("--per", default="file", choices=["file", "study"],
                   help="one row per file (default), or per DICOM study: its most suspicious assessed image's")
    p.add_argument("--dicom-sr", help="write one DICOM Structured Report per study with an image assessed here")
    p.add_argument("--dicom-heatmaps", help="write each flagged DICOM image's heat map as a Secondary Capture here")
    p.add_argument("--split", default="train", help="the split of a Hub dataset")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: the deployed model's own)")
    p.add_argument("--workers", type=int, default=max(0, (os.cpu_count() or 2) // 2 - 1),
                   help="decoding processes (default: half the cores less one; 0 decodes in the main process, which "
                        "was the faster on 2 cores, where the network takes both: docs/speed.md)")
    p.add_argument("--shard-size", type=int, default=2048, help="files per part on disk (bounds memory)")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    accelerator = Accelerator(cpu=not torch.accelerator.is_available())
    try:
        folder = resolve_model_folder(args.model)
        predictor = Predictor.from_pretrained(folder, device=accelerator.device)
        items, total, hub_dataset = list_inputs(args.input, args.split)
        if hub_dataset is not None and (args.dicom_sr or args.dicom_heatmaps):
            raise InputError("--dicom-sr and --dicom-heatmaps read each DICOM file's header again: give a folder, a "
                             "glob or a list file, not a Hub dataset.")
    except (ModelLoadError, InputError) as error:
        sys.exit(str(error))
    threshold = predictor.config.threshold if args.threshold is None else args.threshold
    if not 0.0 <= threshold <= 1.0:
        sys.exit(f"--threshold must lie in [0, 1], got {threshold}.")
    identity = model_identity(predictor, args, folder, threshold)
    parts = args.output.with_name(args.output.name + ".parts")
    record = run_record(args, folder, identity, accelerator.num_processes)
    manifest = parts / "run.json"
    if accelerator.is_main_process:
        parts.mkdir(parents=True, exist_ok=True)
        if manifest.exists() and json.loads(manifest.read_text()) != record:
            sys.exit(f"{parts.name} holds parts of another run (other input, model, processes or heatmaps); "
                     "give another --output, or delete that folder to start again.")
        write_json_atomic(manifest, record)
    accelerator.wait_for_everyone()

    rank, processes = accelerator.process_index, accelerator.num_processes
    bar = tqdm(total=total, unit="img", desc="scoring", disable=not accelerator.is_main_process)
    written = []
    for index, chunk in enumerate(chunks(items, args.shard_size)):
        part = parts / f"part-{index:06d}-{rank}-of-{processes}.csv"
        with accelerator.split_between_processes(chunk) as mine:
            if part.exists():
                bar.update(len(chunk))
            else:
                write_part(score(predictor, mine, hub_dataset, args, threshold, identity, bar, processes), part)
        written.append(index)
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        every = [parts / f"part-{index:06d}-{r}-of-{processes}.csv" for index in written for r in range(processes)]
        if args.per == "study" or args.dicom_sr:
            entries = list(merged_entries(every))
            if args.dicom_sr:
                sources = {item.name: item.source for item in list_inputs(args.input, args.split)[0]}
                reports = write_study_reports(entries, sources, identity, Path(args.dicom_sr))
                print(f"wrote {reports} DICOM SR to {args.dicom_sr}")
        else:
            entries = merged_entries(every)
        if args.per == "study":
            count = write_worklist(study_worklist_rows(entries, threshold), args.output, args.format, STUDY_COLUMNS)
        else:
            count = write_worklist(worklist_rows(entries, threshold), args.output, args.format, COLUMNS)
        print(f"wrote {count} rows to {args.output} (threshold {threshold:.4f})")
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
