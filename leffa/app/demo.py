"""The web demo (``leffa demo``): try-on in a browser with a mask the user can see and correct.

Why a mask editor: a wrong automatic mask (a long sleeve cut short, a dress masked as a top) is the most common
cause of a bad try-on. The page shows the mask and DensePose the model will get (uploaded, or made by the
``leffa.conditions`` plugins when none is uploaded), lets the user grow or shrink the mask, cut it to a garment
length (lower body, dresses) and paint on it (white adds, black removes), then generates and shows before and after.

Every correction goes through ``leffa.mask_edit.edit_mask`` (the one used by ``leffa tryon`` and the server) and
generation through ``TryOnPipeline.__call__``, so the demo's pixels are the API's for the same inputs. The model is
loaded once by the caller; Gradio's queue runs one generation at a time.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from leffa.atomic import save_image
from leffa.errors import LeffaError
from leffa.images import mask_array, resize_labels
from leffa.mask_edit import LENGTH_TYPES, MaskEdit, edit_mask
from leffa.pipeline import GARMENT_TYPES

EXAMPLE_FILES = ("person.jpg", "garment.jpg", "mask.png", "densepose.jpg")
MASK_COLOUR = (255, 64, 160)  # shown over the photo where the model regenerates
ADD, ERASE = "#ffffff", "#000000"  # brush colours


def strokes(editor, size: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The brush layers of an ImageEditor value -> ``(add, erase)`` ``(H, W)`` bool arrays at ``size`` = (H, W):
    painted pixels (alpha > 0) that are light add to the mask, dark ones remove from it."""
    layers = (editor or {}).get("layers") or []
    if not layers:
        return None, None
    add = np.zeros(size, dtype=bool)
    erase = np.zeros(size, dtype=bool)
    for layer in layers:
        rgba = np.asarray(Image.fromarray(np.asarray(layer)).convert("RGBA"))
        if rgba.shape[:2] != size:
            rgba = np.asarray(resize_labels(Image.fromarray(rgba), size))
        painted = rgba[..., 3] > 0
        light = rgba[..., :3].astype(np.int32).mean(axis=-1) >= 128
        add |= painted & light
        erase |= painted & ~light
    return add, erase


def shown(person: Image.Image, mask: Image.Image) -> Image.Image:
    """The photo with the mask's region tinted, half transparent."""
    tint = Image.new("RGB", person.size, MASK_COLOUR)
    alpha = Image.fromarray(mask_array(mask).astype(np.uint8) * 128)
    return Image.composite(tint, person.convert("RGB"), alpha)


def build_demo(pipe, examples: str | Path | None = None, steps: int = 30) -> gr.Blocks:
    """The Gradio app over ``pipe`` (a loaded ``TryOnPipeline``), preloaded with the images in ``examples``
    (``person.jpg``, ``garment.jpg``, ``mask.png``, ``densepose.jpg``) when that folder holds them."""
    files = [Path(examples) / name for name in EXAMPLE_FILES] if examples else []
    preload = [str(path) for path in files] if files and all(path.is_file() for path in files) else [None] * 4
    outputs_dir = Path(tempfile.mkdtemp(prefix="leffa-demo-"))

    def conditions(person, garment, mask, densepose, garment_type, mask_style):
        """The base mask and DensePose: the uploads, else the automatic ones (``pipe.prepare``)."""
        if person is None or garment is None:
            raise LeffaError("upload a person photo and a garment image first")
        job = pipe.prepare(person, garment, mask, densepose, garment_type, mask_style=mask_style)[0]
        return job.mask, job.densepose, job.notes

    def edited(state, editor, grow, shrink, length, garment_type):
        """The corrected mask: ``edit_mask`` of the base mask with the sliders and the brush strokes."""
        person, base = state["person"], state["mask"]
        add, erase = strokes(editor, (base.height, base.width))
        use_length = length if garment_type in LENGTH_TYPES else None
        return edit_mask(base, MaskEdit(int(grow), int(shrink), use_length), garment_type, add, erase), person

    def detect(person, garment, mask, densepose, garment_type, mask_style, grow, shrink, length):
        try:
            base, pose, notes = conditions(person, garment, mask, densepose, garment_type, mask_style)
            state = {"person": person.convert("RGB"), "mask": base, "densepose": pose}
            corrected, _ = edited(state, None, grow, shrink, length, garment_type)
        except LeffaError as error:
            return None, None, None, None, f"**Error:** {error.message}"
        editor = {"background": shown(state["person"], corrected), "layers": [], "composite": None}
        status = "Mask and DensePose ready. " + " ".join(notes)
        return state, editor, pose, corrected, status

    def refresh(state, editor, grow, shrink, length, garment_type):
        """Sliders moved or strokes painted: the corrected mask the model will get."""
        if not state:
            return gr.update(), "Upload a person photo and a garment, or pick an example."
        try:
            corrected, _ = edited(state, editor, grow, shrink, length, garment_type)
        except LeffaError as error:
            return gr.update(), f"**Error:** {error.message}"
        return corrected, ""

    def repicture(state, editor, grow, shrink, length, garment_type):
        """A slider let go: the editor's picture shows the corrected mask under the user's strokes (kept)."""
        if not state:
            return gr.update()
        try:
            untouched, person = edited(state, None, grow, shrink, length, garment_type)
        except LeffaError:
            return gr.update()
        return {"background": shown(person, untouched), "layers": (editor or {}).get("layers") or [], "composite": None}

    def generate(state, editor, garment, grow, shrink, length, garment_type, steps, guidance, seed, repaint):
        if not state:
            raise gr.Error("Upload a person photo and a garment, or pick an example.")
        try:
            corrected, person = edited(state, editor, grow, shrink, length, garment_type)
            result = pipe(
                person,
                garment,
                mask=corrected,
                densepose=state["densepose"],
                garment_type=garment_type,
                steps=int(steps),
                guidance=float(guidance),
                seed=int(seed),
                repaint=bool(repaint),
            )
        except LeffaError as error:
            raise gr.Error(error.message) from None
        image = result.images[0]
        path = outputs_dir / f"leffa-tryon-seed{int(seed)}.png"
        save_image(image, path)
        notes = " ".join(result.notes)
        return (person, image), str(path), corrected, f"Done: {int(steps)} steps, seed {int(seed)}. {notes}"

    with gr.Blocks(title="leffa try-on") as demo:
        gr.Markdown(
            "# leffa virtual try-on\nUpload a person photo and a garment (or pick an example), check the "
            "mask (tinted: the region the model redraws), correct it, then generate."
        )
        state = gr.State(None)
        with gr.Row():
            person = gr.Image(preload[0], type="pil", label="Person photo", elem_id="person", sources=["upload"])
            garment = gr.Image(preload[1], type="pil", label="Garment", elem_id="garment", sources=["upload"])
            with gr.Column():
                garment_type = gr.Radio(
                    list(GARMENT_TYPES), value="upper_body", label="Garment type", elem_id="garment-type"
                )
                mask_style = gr.Radio(["upstream", "tight"], value="upstream", label="Automatic mask rules")
                mask_upload = gr.Image(
                    preload[2],
                    type="pil",
                    image_mode="L",
                    label="Mask (optional; default automatic)",
                    elem_id="mask-upload",
                    sources=["upload"],
                    height=160,
                )
                densepose_upload = gr.Image(
                    preload[3],
                    type="pil",
                    label="DensePose (optional; default automatic)",
                    elem_id="densepose-upload",
                    sources=["upload"],
                    height=160,
                )
        status = gr.Markdown("", elem_id="status")
        with gr.Row():
            with gr.Column(scale=2):
                editor = gr.ImageEditor(
                    type="numpy",
                    label="Mask: paint white to add, black to remove",
                    elem_id="mask-editor",
                    sources=[],
                    transforms=[],
                    layers=False,
                    brush=gr.Brush(colors=[ADD, ERASE], default_color=ADD, color_mode="fixed", default_size=8),
                    height=420,
                )
            with gr.Column(scale=1):
                grow = gr.Slider(0, 64, value=0, step=1, label="Grow mask (px)", elem_id="grow")
                shrink = gr.Slider(0, 64, value=0, step=1, label="Shrink mask (px)", elem_id="shrink")
                length = gr.Slider(
                    0.1,
                    1.0,
                    value=1.0,
                    step=0.05,
                    label="Garment length (lower body, dresses)",
                    elem_id="length",
                    interactive=False,
                )
                mask_used = gr.Image(
                    type="pil", image_mode="L", label="Mask used", elem_id="mask-used", interactive=False, height=200
                )
                densepose_shown = gr.Image(
                    type="pil", label="DensePose", elem_id="densepose-shown", interactive=False, height=200
                )
        with gr.Row():
            steps_box = gr.Slider(1, 100, value=steps, step=1, label="Steps", elem_id="steps")
            guidance = gr.Slider(1.0, 5.0, value=2.5, step=0.1, label="Guidance", elem_id="guidance")
            seed = gr.Number(42, precision=0, label="Seed", elem_id="seed")
            repaint = gr.Checkbox(True, label="Keep pixels outside the mask (repaint)")
        run = gr.Button("Generate", variant="primary", elem_id="generate")
        with gr.Row():
            compare = gr.ImageSlider(label="Before / after", elem_id="compare", type="pil", interactive=False)
            download = gr.DownloadButton("Download PNG", elem_id="download", value=None)

        detect_inputs = [person, garment, mask_upload, densepose_upload, garment_type, mask_style, grow, shrink, length]
        detect_outputs = [state, editor, densepose_shown, mask_used, status]
        model: dict[str, Any] = {"concurrency_id": "model", "concurrency_limit": 1}  # one user of the model at a time
        for event in (
            person.upload,
            garment_type.change,
            mask_style.change,
            mask_upload.change,
            densepose_upload.change,
            garment.upload,
        ):
            event(detect, detect_inputs, detect_outputs, **model)
        person.upload(lambda: (None, None), None, [mask_upload, densepose_upload])  # a new photo: new conditions
        garment_type.change(lambda kind: gr.update(interactive=kind in LENGTH_TYPES, value=1.0), garment_type, length)
        correction = [state, editor, grow, shrink, length, garment_type]
        for trigger in (grow.change, shrink.change, length.change, editor.change):
            trigger(refresh, correction, [mask_used, status], concurrency_limit=None, show_progress="hidden")
        for slider in (grow, shrink, length):
            slider.release(repicture, correction, editor, concurrency_limit=None, show_progress="hidden")
        run.click(
            generate,
            [state, editor, garment, grow, shrink, length, garment_type, steps_box, guidance, seed, repaint],
            [compare, download, mask_used, status],
            **model,
        )
        demo.load(detect, detect_inputs, detect_outputs, **model)
        if preload[0] is not None:
            gr.Examples([preload], [person, garment, mask_upload, densepose_upload], label="Example")
    return demo.queue(default_concurrency_limit=1, max_size=32)
