"""Gradio demo: chest X-ray in; pneumonia probability, a triage decision and a Grad-CAM heatmap out.

    python app.py                                   # bundled model, http://127.0.0.1:7860
    python app.py --share                           # plus a temporary public link
    python app.py --model USER/NAME --port 8080     # a Hub model

Environment variables (for Spaces): PNEUMONIA_MODEL, GRADIO_SERVER_NAME, GRADIO_SERVER_PORT.
A research aid, not a diagnosis. Uploads, heatmaps and result tables live in Gradio's cache and
are deleted `--cache-minutes` after they were made, and all of them when the server stops
(SIGTERM or SIGINT).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from modeling.runtime.host import use_tcmalloc  # noqa: E402

if __name__ == "__main__":
    use_tcmalloc()  # before torch is imported (see modeling/runtime/host.py)

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from gradio.utils import NamedString  # noqa: E402
from PIL import Image  # noqa: E402

from modeling import ImageLoadError, ModelLoadError, Predictor, to_rgb  # noqa: E402
from modeling.runtime.dicom import HeaderCheck  # noqa: E402
from modeling.runtime.display import overlay, preview  # noqa: E402
from modeling.runtime.ood import IN_DISTRIBUTION, NOT_AN_XRAY  # noqa: E402
from modeling.runtime.preprocessing import read_checked  # noqa: E402
from modeling.runtime.worklist import UNREADABLE, Entry, header_fields, make_entry, refused_entry, sort_key  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = os.environ.get("PNEUMONIA_MODEL", str(HERE / "weights" / "pneumonia-resnet50"))
EXAMPLES = sorted((HERE / "examples").glob("*.jpeg"))
DEFAULT_CACHE_MINUTES = 10.0
# compiled int8 graphs, kept between starts (a local compile cache, like Inductor's; see modeling/runtime/quantize.py)
INT8_PACKAGES = Path(os.environ.get("PNEUMONIA_CACHE") or Path.home() / ".cache" / "pneumonia-xray") / "int8"
LARGE_IMAGE_BYTES = 20_000_000  # uploads above this are decoded one at a time (bounded memory)
DISCLAIMER = ("**Research aid, not a diagnosis.** Trained on X-rays of children aged one to five from one "
              "hospital; results on adults or other hospitals are unknown. Every image needs a radiologist's read.")
NOT_AN_XRAY_TEXT = ("### This does not look like a chest X-ray\n"
                    "The model was trained on frontal chest X-rays of children only, and this image looks like "
                    "something else (a photo, a document, another kind of scan), so no pneumonia assessment is given.")
UNLIKE_TRAINING_TEXT = ("**This is unlike the X-rays the model was trained on** (children aged one to five from one "
                        "hospital): an adult's X-ray, another kind of view or another hospital's equipment, say. "
                        "The result below is shown, but it may well be wrong.")
BATCH_HEADERS = ["rank", "file", "p_pneumonia", "result", "upload_order", "warnings"]


def decision_text(p_positive: float, threshold: float) -> str:
    if p_positive >= threshold:
        return (f"### Pneumonia suspected: prioritise for radiologist review\n"
                f"P(pneumonia) = {p_positive:.3f}, at or above the threshold {threshold:.3f}.")
    return (f"### No pneumonia detected: routine reading order\n"
            f"P(pneumonia) = {p_positive:.3f}, below the threshold {threshold:.3f}.")


def operating_point_text(config, threshold: float) -> str:
    """What the threshold meant on validation (the curve stored in config.json by modeling.training.finalize)."""
    curve = config.validation.get("curve")
    if not curve:
        return "This model carries no validation results for its thresholds."
    if abs(threshold - config.threshold) < 5e-4 and "sensitivity" in config.validation:  # the slider rounds
        shown, sensitivity, specificity = config.threshold, config.validation["sensitivity"], config.validation["specificity"]
    else:
        i = int(np.argmin(np.abs(np.asarray(curve["threshold"]) - threshold)))
        shown, sensitivity, specificity = curve["threshold"][i], curve["sensitivity"][i], curve["specificity"][i]
    return (f"At threshold {shown:.3f}, validation sensitivity was **{sensitivity:.1%}** "
            f"and specificity **{specificity:.1%}** ({config.validation.get('n', '?')} children's X-rays "
            f"held out from training). The model's operating threshold is {config.threshold:.3f}. "
            "Expect lower specificity on new data.")


class UploadedFile(gr.File):
    """`gr.File(type="filepath")` without its leak: Gradio 6.31 opens an empty NamedTemporaryFile in its cache
    for every file a request names and never closes or deletes it. This hands the function the cached
    upload's path and nothing more; `is_template` has the browser render it as a plain File."""
    is_template = True

    def _process_single_file(self, f) -> NamedString:
        return NamedString(f.path)


class Uploads:
    """Reads the files a request names, from Gradio's cache, without ever deleting them (Gradio's
    `delete_cache` does, on its schedule and at shutdown), and only files this server was sent:
    an upload or an example. Messages name a file by its original name, never by its path."""

    def __init__(self, demo: gr.Blocks, cache_minutes: float):
        self.demo = demo
        self.cache_minutes = cache_minutes
        self.large = threading.Semaphore(1)

    def _known(self, path: str) -> bool:
        kept = set().union(*(getattr(block, "keep_in_cache", set()) for block in self.demo.blocks.values()))
        return path in self.demo.upload_file_set or path in kept

    def read(self, path: str) -> tuple[Image.Image | None, HeaderCheck | None]:
        """(the decoded image, a DICOM header's check): None for an image its header refuses, which is never
        decoded (raises ImageLoadError with a sentence a user can act on)."""
        name = Path(path).name
        try:
            size = os.path.getsize(path)
        except OSError:
            raise ImageLoadError(f"{name} is no longer on the server (uploads are kept for {self.cache_minutes:g} "
                                 "minutes); please upload it again.") from None
        if not self._known(path):
            raise ImageLoadError(f"{name} was not uploaded to this demo; please upload the image.")
        try:  # large images one at a time: each is reduced while decoding, but its file is read whole
            with self.large if size > LARGE_IMAGE_BYTES else contextlib.nullcontext():
                return read_checked(path)
        except ImageLoadError as error:
            raise ImageLoadError(f"{name}: {error}") from None


def _clean_temp_folder(folder: Path) -> None:
    """Remove the empty folders Gradio leaves in its cache once their files are deleted. The cache may be shared
    with other servers that delete folders meanwhile: os.walk skips what vanishes, deepest folders first."""
    for directory, _, _ in os.walk(folder, topdown=False):
        if Path(directory) != folder:
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # only empty ones


def build_demo(predictor: Predictor, cache_minutes: float = DEFAULT_CACHE_MINUTES) -> gr.Blocks:
    """The demo's UI and API around a `Predictor` (compiled already if it is to be)."""
    # one image now, so that compiling (int8 always, `--compile` otherwise) happens at start, not at the first request
    predictor.analyse([Image.new("L", (predictor.config.image_size,) * 2, 128)])
    config = predictor.config
    labels = list(config.label_names)
    lifetime = max(1, round(cache_minutes * 60))

    with gr.Blocks(title="Pneumonia X-ray triage", analytics_enabled=False,
                   delete_cache=(max(1, min(60, lifetime // 2)), lifetime)) as demo:
        uploads = Uploads(demo, cache_minutes)

        def predict(file: str | None, threshold: float = config.threshold, heatmap: bool = True):
            if not file:
                raise gr.Error("Please upload a chest X-ray image first.")
            try:
                image, check = uploads.read(file)
            except ImageLoadError as error:
                raise gr.Error(str(error)) from None
            if image is None:
                return None, f"### Not assessed: {check.verdict}\n{check.reason}.", None
            try:
                analysis = predictor.analyse([image])
                probs, verdict = analysis.probabilities[0], analysis.verdicts[0]
                shown = None  # nothing to encode and send back; the browser already shows the upload
                if heatmap and verdict != NOT_AN_XRAY:
                    shown = private_file("heatmap.png", overlay(to_rgb(image), predictor.grad_cam(image)).save)
            except Exception:  # noqa: BLE001 - never take the server down; the log gets no image data
                raise gr.Error("The image could not be analysed; please try another file.") from None
            if verdict == NOT_AN_XRAY:
                return None, NOT_AN_XRAY_TEXT, None
            confidences = {name: float(p) for name, p in zip(labels, probs)}
            text = decision_text(confidences[config.positive_label], threshold)
            if verdict != IN_DISTRIBUTION:
                text += "\n\n" + UNLIKE_TRAINING_TEXT
            for note in [image.info.get("note")] + [w.text for w in (check.warnings if check else ())]:
                if note:
                    text += f"\n\n*Note: {note}.*"
            return confidences, text, shown

        def show_upload(file: str | None):
            """The browser's preview of an upload."""
            try:
                image = uploads.read(file)[0] if file else None
                return preview(to_rgb(image)) if image is not None else None
            except ImageLoadError:
                return None

        def predict_batch(files: list[str] | None, threshold: float = config.threshold, progress=gr.Progress()):
            """A reading worklist: highest P(pneumonia) first; unlike-training, not-an-X-ray and unreadable
            files after them; the CSV in the same order, with the upload order kept."""
            if not files:
                raise gr.Error("Please upload one or more images.")
            entries, images, positions, checks = [], [], [], {}
            for order, path in enumerate(progress.tqdm(files, desc="Reading images")):
                try:
                    image, checks[order] = uploads.read(path)
                except ImageLoadError as error:
                    entries.append(Entry(order, Path(path).name, UNREADABLE, reason=str(error)))
                    continue
                if image is None:  # refused by its DICOM header
                    entries.append(refused_entry(order, Path(path).name, checks[order]))
                else:
                    images.append(image)
                    positions.append(order)
            progress(0.5, desc=f"Analysing {len(images)} images")
            analysis = predictor.analyse(images)
            for order, p, verdict in zip(positions, analysis.probabilities[:, config.positive_index],
                                         analysis.verdicts):
                entries.append(make_entry(order, Path(files[order]).name, p, verdict, decimals=4,
                                          **header_fields(checks[order])))
            rows = [[rank, e.name, e.probability, e.result(threshold), e.order + 1, e.warnings]
                    for rank, e in enumerate(sorted(entries, key=sort_key), 1)]
            def write_csv(path: str) -> None:
                with open(path, "w", newline="") as f:
                    writer = csv.writer(f)
                    writer.writerow(BATCH_HEADERS)
                    writer.writerows(rows)
            return rows, private_file("pneumonia_results.csv", write_csv)

        def private_file(name: str, write) -> str:
            """A file of this request's own in Gradio's cache (served from there, deleted with it). Gradio would
            store a returned picture under its content's hash, where two requests with the same heatmap write
            the same file while it is being downloaded."""
            path = Path(demo.GRADIO_CACHE) / f"request-{uuid.uuid4().hex}" / name
            path.parent.mkdir(parents=True)
            write(str(path))
            return str(path)

        gr.Markdown("# Pneumonia detection from chest X-rays\n" + DISCLAIMER)
        with gr.Tab("Single image"):
            with gr.Row():
                with gr.Column():
                    file_in = UploadedFile(label="Chest X-ray: PNG, JPEG, TIFF, BMP or DICOM", type="filepath")
                    threshold = gr.Slider(0.0, 1.0, value=round(config.threshold, 3), step=0.005,
                                          label="Decision threshold (P(pneumonia) at or above it is flagged)")
                    threshold_info = gr.Markdown(operating_point_text(config, config.threshold))
                    heatmap = gr.Checkbox(value=True, label="Show Grad-CAM heatmap")
                    run = gr.Button("Analyse", variant="primary")
                with gr.Column():
                    decision = gr.Markdown(elem_id="decision")
                    # no heading: the argmax could contradict the decision at a threshold other than 0.5
                    probabilities = gr.Label(label="Probabilities", num_top_classes=len(labels), show_heading=False)
                    with gr.Row():
                        upload_preview = gr.Image(label="The X-ray", type="pil", elem_id="upload-preview",
                                                  format="png", interactive=False)
                        image_out = gr.Image(label="Grad-CAM heatmap", type="pil",
                                             elem_id="heatmap", format="png", interactive=False)
            if EXAMPLES:
                gr.Examples([[str(path)] for path in EXAMPLES], inputs=[file_in],
                            label="Examples: test images of Kermany et al. 2018 (CC BY 4.0)")
                # Gradio copied the examples into its cache just now; keep them there for the server's whole
                # life (Gradio 6.31 marks only what a sample displays, the file name, so delete_cache took them)
                file_in.keep_in_cache.update(file_in.temp_files)
        with gr.Tab("Batch"):
            files_in = UploadedFile(label="Many X-rays", file_count="multiple", type="filepath")
            batch_threshold = gr.Slider(0.0, 1.0, value=round(config.threshold, 3), step=0.005, label="Decision threshold")
            run_batch = gr.Button("Analyse all", variant="primary")
            table = gr.Dataframe(headers=BATCH_HEADERS, label="Reading worklist: highest P(pneumonia) first",
                                 interactive=False)
            csv_out = gr.File(label="Download the worklist (CSV)")
        run.click(predict, [file_in, threshold, heatmap], [probabilities, decision, image_out], api_name="predict")
        file_in.change(show_upload, file_in, upload_preview, api_visibility="private", show_progress="hidden")
        threshold.change(lambda t: operating_point_text(config, t), threshold, threshold_info,
                         api_visibility="private", show_progress="hidden")
        run_batch.click(predict_batch, [files_in, batch_threshold], [table, csv_out], api_name="predict_batch")
    return demo


def serve(demo: gr.Blocks, host: str, port: int, share: bool = False) -> None:
    """Start serving (returns at once); if a share link cannot be made, say so in one sentence."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        demo.queue(default_concurrency_limit=2).launch(server_name=host, server_port=port, share=share,
                                                       prevent_thread_lock=True, show_error=True,
                                                       max_file_size="200mb", quiet=True)
    print(f"Demo running at {demo.local_url}", flush=True)
    if share and demo.share_url:
        print(f"Public share link: {demo.share_url}", flush=True)
    elif share:
        print("Could not create a public share link (the Gradio share server cannot be reached); the demo is "
              f"still serving at {demo.local_url}; connect to the internet and restart with --share, "
              "or publish it as a Space (python -m scripts.hub push-space).", flush=True)


def use_private_cache_folder() -> Path:
    """Give this server a Gradio cache folder of its own, inside the configured one (GRADIO_TEMP_DIR or the
    system's), so that stopping it can remove all its files, example copies included, and nothing of another
    server's (Gradio names cached files by content: two servers share the copies of the same example)."""
    root = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")
    folder = root / f"pneumonia-demo-{os.getpid()}"
    os.environ["GRADIO_TEMP_DIR"] = str(folder)  # read by Gradio when the Blocks and the server are made
    return folder


def stop(demo: gr.Blocks, private_folder: Path | None = None) -> None:
    """Stop serving: Gradio deletes every file this server put in its cache (uploads, heatmaps, worklists);
    then this server's private folder goes, or else the empty folders Gradio left."""
    demo.close()
    if private_folder is not None:
        shutil.rmtree(private_folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            private_folder.parent.rmdir()  # the shared root too, if nothing else is in it
    else:
        _clean_temp_folder(Path(demo.GRADIO_CACHE))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="model folder or Hugging Face Hub id")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also create a temporary public link")
    p.add_argument("--cache-minutes", type=float, default=DEFAULT_CACHE_MINUTES,
                   help="how long uploads, heatmaps and result tables stay on the server")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile a bf16 or fp32 model: faster answers after about a minute of compiling at "
                        "start (an int8 model, like the bundled one, is always compiled, in seconds)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        predictor = Predictor.from_pretrained(args.model, compile=args.compile, int8_package_dir=INT8_PACKAGES)
    except ModelLoadError as error:
        sys.exit(str(error))
    private_folder = use_private_cache_folder()  # only for a server that will run
    demo = build_demo(predictor, cache_minutes=args.cache_minutes)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # how Spaces and containers stop a server, and Ctrl-C
        signal.signal(signum, lambda *_: stopping.set())
    serve(demo, args.host, args.port, args.share)
    stopping.wait()
    print("Stopping: deleting this server's uploads, heatmaps and result tables.", flush=True)
    stop(demo, private_folder)


if __name__ == "__main__":
    main()
