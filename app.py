"""Gradio demo: chest X-ray in; pneumonia probability, a triage decision and a Grad-CAM heatmap out.

    python app.py                                   # bundled model, http://127.0.0.1:7860
    python app.py --share                           # plus a temporary public link
    python app.py --model USER/NAME --port 8080     # a Hub model

Environment variables (for Spaces): PNEUMONIA_MODEL, GRADIO_SERVER_NAME, GRADIO_SERVER_PORT.
A research aid, not a diagnosis. Uploaded files are deleted as soon as they are read.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from modeling.runtime import use_tcmalloc  # noqa: E402

if __name__ == "__main__":
    use_tcmalloc()  # before torch is imported (see modeling/runtime.py)

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from modeling import ImageLoadError, ModelLoadError, PneumoniaClassifier, read_image, to_rgb  # noqa: E402
from modeling.explain import grad_cam, overlay, preview  # noqa: E402
from modeling.inference import Predictor  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = os.environ.get("PNEUMONIA_MODEL", str(HERE / "weights" / "pneumonia-resnet50"))
EXAMPLES = sorted((HERE / "examples").glob("*.jpeg"))
EXAMPLE_NAMES = {path.name for path in EXAMPLES}
DISCLAIMER = ("**Research aid, not a diagnosis.** Trained on X-rays of children aged one to five from one "
              "hospital; results on adults or other hospitals are unknown. Every image needs a radiologist's read.")
NOT_AN_XRAY = ("### This does not look like a chest X-ray\n"
               "The model was trained on frontal chest X-rays of children only, and this image is far from "
               "them, so no pneumonia assessment is given.")


def decision_text(p_positive: float, threshold: float) -> str:
    if p_positive >= threshold:
        return (f"### Pneumonia suspected: prioritise for radiologist review\n"
                f"P(pneumonia) = {p_positive:.3f}, at or above the threshold {threshold:.3f}.")
    return (f"### No pneumonia detected: routine reading order\n"
            f"P(pneumonia) = {p_positive:.3f}, below the threshold {threshold:.3f}.")


def operating_point_text(config, threshold: float) -> str:
    """What the threshold meant on validation (the curve stored in config.json by train.py)."""
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


def _read_and_delete(path: str) -> Image.Image:
    """Decode an upload, then delete it: uploads are not kept after the request (raises ImageLoadError)."""
    try:
        return read_image(path)
    finally:
        _delete_upload(path)


def _delete_upload(path: str) -> None:
    if Path(path).name in EXAMPLE_NAMES:
        return  # the bundled examples are public files that gradio keeps for the next click
    with contextlib.suppress(OSError):
        os.remove(path)
        os.rmdir(os.path.dirname(path))


def build_demo(model: PneumoniaClassifier, compile: bool = False) -> gr.Blocks:
    """The demo's UI and API. `compile`: torch.compile the model, compiling once for a single image now."""
    predictor = Predictor(model, compile=compile)
    if compile or model.config.precision == "int8":  # compile for one image now, not at the first request
        predictor.analyse([Image.new("L", (model.config.image_size,) * 2, 128)])
    config = model.config
    labels = list(config.label_names)

    def predict(file: str | None, threshold: float = config.threshold, heatmap: bool = True):
        if not file:
            raise gr.Error("Please upload a chest X-ray image first.")
        try:
            image = _read_and_delete(file)
        except ImageLoadError as error:
            raise gr.Error(str(error)) from None
        try:
            all_probs, in_distribution = predictor.analyse([image])
            probs, looks_like_xray = all_probs[0], bool(in_distribution[0])
            if heatmap and looks_like_xray:
                cam = grad_cam(model, predictor.tensor(image), config.positive_index)[0]
                shown = overlay(to_rgb(image), cam)
            else:  # nothing to encode and send back; the browser already shows the upload (show_upload)
                shown = None
        except Exception:  # noqa: BLE001 - never take the server down; the log gets no image data
            raise gr.Error("The image could not be analysed; please try another file.") from None
        if not looks_like_xray:
            return None, NOT_AN_XRAY, shown
        confidences = {name: float(p) for name, p in zip(labels, probs)}
        text = decision_text(confidences[config.positive_label], threshold)
        if "note" in image.info:
            text += f"\n\n*Note: {image.info['note']}*"
        return confidences, text, shown

    def show_upload(file: str | None):
        """The browser's preview of an upload (the analysis reads, then deletes, the file itself)."""
        try:
            return preview(to_rgb(read_image(file))) if file else None
        except ImageLoadError:
            return None

    def predict_batch(files: list[str] | None, threshold: float = config.threshold, progress=gr.Progress()):
        if not files:
            raise gr.Error("Please upload one or more images.")
        rows, readable, images = [], [], []
        for path in progress.tqdm(files, desc="Reading images"):
            name = Path(path).name
            try:
                images.append(_read_and_delete(path))
                readable.append(len(rows))
                rows.append([name, None, None])
            except ImageLoadError as error:
                rows.append([name, None, f"not analysed: {error}"])
        progress(0.5, desc=f"Analysing {len(images)} images")
        if images:
            probs, in_distribution = predictor.analyse(images)
            for row_index, p, looks_like_xray in zip(readable, probs[:, config.positive_index], in_distribution):
                if not looks_like_xray:
                    rows[row_index][2] = "does not look like a chest X-ray: no assessment"
                    continue
                rows[row_index][1] = round(float(p), 4)
                rows[row_index][2] = "pneumonia suspected" if p >= threshold else "no pneumonia detected"
        csv_path = Path(tempfile.mkdtemp(prefix="pneumonia-batch-")) / "pneumonia_results.csv"
        with open(csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "p_pneumonia", "result"])
            writer.writerows(rows)
        return rows, str(csv_path)

    with gr.Blocks(title="Pneumonia X-ray triage", analytics_enabled=False, delete_cache=(60, 120)) as demo:
        gr.Markdown("# Pneumonia detection from chest X-rays\n" + DISCLAIMER)
        with gr.Tab("Single image"):
            with gr.Row():
                with gr.Column():
                    file_in = gr.File(label="Chest X-ray: PNG, JPEG, TIFF, BMP or DICOM", type="filepath")
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
        with gr.Tab("Batch"):
            files_in = gr.File(label="Many X-rays", file_count="multiple", type="filepath")
            batch_threshold = gr.Slider(0.0, 1.0, value=round(config.threshold, 3), step=0.005, label="Decision threshold")
            run_batch = gr.Button("Analyse all", variant="primary")
            table = gr.Dataframe(headers=["file", "p_pneumonia", "result"], label="Results", interactive=False)
            csv_out = gr.File(label="Download results (CSV)")
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
              "or publish it as a Space (python -m modeling.hub push-space).", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="model folder or Hugging Face Hub id")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also create a temporary public link")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile a bf16 or fp32 model: faster answers after about a minute of compiling at "
                        "start (an int8 model, like the bundled one, is always compiled, in seconds)")
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()
    try:
        model = PneumoniaClassifier.from_pretrained(args.model)
    except ModelLoadError as error:
        sys.exit(str(error))
    demo = build_demo(model, compile=args.compile)
    serve(demo, args.host, args.port, args.share)
    demo.block_thread()


if __name__ == "__main__":
    main()
