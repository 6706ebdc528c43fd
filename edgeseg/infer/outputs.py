"""What `edgeseg infer` writes per case, in the input's geometry: the label map (label values: a grey PNG for 2D
images, NIfTI with the input's header for volumes), optionally softmax probabilities, a PNG overlay with a legend
and (2D) the label map as a palette PNG in colour. Every file is written
to a temporary name and renamed, and recorded in the output folder's ledger (:mod:`edgeseg.infer.ledger`):
``--force`` replaces only files listed there and unchanged since; an output folder holding inputs is refused."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.data.io import Geometry, atomic_write, write_array
from edgeseg.errors import EdgesegError
from edgeseg.overwrite import check_replace, json_object

CASES_DIR = ".edgeseg-cases"  # the per-case sidecars of edgeseg.infer.ledger (and its lock)

_REPORT_KEYS = {"bundle", "artifact", "done", "failed", "stages_seconds"}  # what every infer report holds

# label 0 (background) black, then seven well-separated colours; further labels get spread hues (label_colours)
_COLOURS = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240]], np.uint8)


def output_paths(out_dir: Path, case_id: str, kind: str, probabilities: bool, overlay: bool) -> dict[str, Path]:
    mask = out_dir / f"{case_id}{'.png' if kind == '2d' else '.nii.gz'}"
    paths = {"mask": mask}
    if probabilities:
        paths["probabilities"] = out_dir / f"{case_id}_probabilities{'.npy' if kind == '2d' else '.nii.gz'}"
    if overlay:
        paths["overlay"] = out_dir / f"{case_id}_overlay.png"
        if kind == "2d":  # the label map in colour for a person; the mask itself stays what tools read
            paths["colour"] = out_dir / f"{case_id}_colour.png"
    return paths


def make_out(out: Path) -> None:
    """Create the output folder (one line, not a traceback, when a file is in the way)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgesegError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None


def refuse_inputs_inside(out_dir: Path, inputs: list[Path]) -> None:
    """An output folder that is, or holds (at any depth, links resolved), one of the inputs is refused."""
    out = out_dir.resolve()
    for path in inputs:
        if path.resolve().is_relative_to(out):
            raise EdgesegError(f"{out_dir}: holds the input {path}; write the outputs to a folder outside the inputs")


def _not_an_infer_report(path: Path) -> str | None:
    if _REPORT_KEYS <= set(json_object(path) or {}):
        return None
    return "exists and is not an edgeseg infer report; not overwritten: choose another --report path"


def check_report_path(path: Path, force: bool, out: Path | None = None) -> None:
    """``--report FILE`` may only replace a previous edgeseg infer report, and only with ``force``; in the output
    folder ``out`` it must be a ``.json`` file outside edgeseg's records there (no mask, ledger or sidecar is
    ever a report's name). Checked before the run."""
    path = Path(path)
    parent = next((p for p in path.absolute().parents if p.exists() or p.is_symlink()), None)
    if parent is not None and not parent.is_dir():
        raise EdgesegError(f"{path}: {parent} is not a folder; choose another --report path")
    folder, cases = path.absolute().parent.resolve(), None if out is None else (out / CASES_DIR).absolute().resolve()
    if out is not None and folder in (out.absolute().resolve(), cases):
        if path.suffix != ".json" or folder == cases:
            raise EdgesegError(f"{path}: a --report in the output folder must be a .json file (it could take the "
                               "name of a mask or of edgeseg's records there)")
    check_replace(path, force, _not_an_infer_report, "exists (a previous edgeseg infer report)")


def softmax_in_place(logits: np.ndarray) -> np.ndarray:
    """Softmax over the class axis, computed in ``logits`` itself: a large image holds no extra copies."""
    logits -= logits.max(axis=0, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=0, keepdims=True)
    return logits


def label_colours(n: int = 256) -> np.ndarray:
    """``(n, 3)`` uint8 colour per label value: black background, a fixed distinct set, then spread hues."""
    import colorsys

    extra = [[round(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1, 0.75, 0.95)]
             for i in range(max(0, n - len(_COLOURS)))]
    return np.concatenate([_COLOURS, np.array(extra, np.uint8).reshape(-1, 3)])[:n]


def _save_png(path: Path, image, before_rename=None) -> None:
    """A PIL image to ``path`` (atomically); PNG level 1: label maps barely compress better at the default 6,
    which takes ~2× longer to write."""
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", compress_level=1), before_rename)


def write_label_png(path: Path, mask: np.ndarray, before_rename=None) -> None:
    """A 2D label map as a palette PNG: each pixel holds its label value (0 background, 1, 2 … as in the bundle's
    ``label_names``), which PIL, numpy and edgeseg read back, and the palette shows them in colour. imageio and
    scikit-image (so nnU-Net's reader) apply the palette and read colours: the mask a tool reads is grey."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
    image.putpalette(label_colours().tobytes())  # "L" becomes "P": the pixel values stay the label values
    _save_png(path, image, before_rename)


def _display(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 of a ``(C, H, W)`` image: RGB as is, else the first channel stretched to 1–99 %."""
    if image.shape[0] == 3 and image.dtype == np.uint8:
        return np.moveaxis(image, 0, -1).copy()  # the overlay is drawn into it
    ch = image[0].astype(np.float32)
    lo, hi = np.percentile(ch, (1, 99))
    grey = (np.clip((ch - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def _contour(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of a structure within ``width`` px of a pixel with another label value (4-neighbourhood)."""
    edge = np.zeros(mask.shape, bool)
    for axis in (0, 1):
        diff = np.diff(mask, axis=axis) != 0
        lead, trail = [slice(None)] * 2, [slice(None)] * 2
        lead[axis], trail[axis] = slice(1, None), slice(None, -1)
        edge[tuple(lead)] |= diff
        edge[tuple(trail)] |= diff
    for _ in range(width - 1):  # thicken: a 1-px line vanishes when a large image is viewed whole
        grown = edge.copy()
        grown[1:] |= edge[:-1]
        grown[:-1] |= edge[1:]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    return edge & (mask > 0)


def _font(px: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=px)  # scalable since Pillow 10.1
    except TypeError:
        return ImageFont.load_default()


def _legend(label_names: list[str], present: set[int], height: int, font_px: int) -> np.ndarray:
    """``(max(height, needed), width, 3)`` uint8: a colour swatch and the name of each foreground label."""
    from PIL import Image, ImageDraw

    font, pad, row = _font(font_px), font_px // 2, round(font_px * 1.5)
    rows = [(i, name if i in present else f"{name} (not found)") for i, name in enumerate(label_names) if i > 0]
    text_w = max(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(t, font=font) for _, t in rows)
    width = int(3 * pad + font_px + text_w + pad)
    strip = Image.new("RGB", (width, max(height, 2 * pad + row * len(rows))), (32, 32, 32))
    draw, colours = ImageDraw.Draw(strip), label_colours(len(label_names))
    for n, (i, text) in enumerate(rows):
        y = pad + n * row
        draw.rectangle([pad, y, pad + font_px, y + font_px], fill=tuple(int(c) for c in colours[i]))
        draw.text((2 * pad + font_px, y), text, fill=(235, 235, 235), font=font)
    return np.asarray(strip)


def overlay_png(image: np.ndarray, mask: np.ndarray, label_names: list[str] | None = None,
                alpha: float = 0.35) -> np.ndarray:
    """RGB overlay of the mask on the image — each structure tinted, its outline drawn in its colour — with a
    legend of the label names beside it; for a volume, the slice (last axis) with the most foreground."""
    if mask.ndim == 3:
        z = int(np.argmax((mask > 0).reshape(-1, mask.shape[-1]).sum(0)))
        image, mask = image[..., z], mask[..., z]
    names = label_names or [f"label {i}" for i in range(int(mask.max()) + 1)]
    colours = label_colours(max(len(names), int(mask.max()) + 1))
    rgb = _display(image)
    foreground = mask > 0  # blended there only: no float copy of the whole image
    rgb[foreground] = ((1 - alpha) * rgb[foreground] + alpha * colours[mask[foreground]]).astype(np.uint8)
    edge = _contour(mask, max(1, round(min(mask.shape) / 256)))
    rgb[edge] = colours[mask[edge]]
    if len(names) < 2:
        return rgb
    legend = _legend(names, set(np.unique(mask).tolist()), rgb.shape[0], max(11, min(48, rgb.shape[0] // 24)))
    if legend.shape[0] > rgb.shape[0]:  # more labels than fit beside a small image: extend it downwards
        rgb = np.concatenate([rgb, np.full((legend.shape[0] - rgb.shape[0], *rgb.shape[1:]), 32, np.uint8)])
    return np.concatenate([rgb, legend], axis=1)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save(path) would append ".npy" to the temporary name
        np.save(f, arr)


def write_outputs(paths: dict[str, Path], mask: np.ndarray, logits: np.ndarray | None, image: np.ndarray,
                  geometry: Geometry, label_names: list[str] | None = None, seal=None) -> None:
    """Write the mask (label values) and, as asked, the probabilities (``logits`` are overwritten by them), the
    overlay (with a legend of ``label_names``) and the mask in colour; ``seal(path, tmp)`` is called with each
    file complete at its temporary name, before it is renamed onto ``path``."""
    def sealing(role):
        return None if seal is None else (lambda tmp: seal(paths[role], tmp))

    write_array(paths["mask"], mask.astype(np.uint8), geometry, sealing("mask"))
    if "colour" in paths:
        write_label_png(paths["colour"], mask, sealing("colour"))
    if "probabilities" in paths:
        prob = softmax_in_place(logits.astype(np.float32, copy=False))
        if paths["probabilities"].suffix == ".npy":
            atomic_write(paths["probabilities"], lambda tmp: _save_npy(tmp, prob.astype(np.float16)),
                         sealing("probabilities"))
        else:
            write_array(paths["probabilities"], prob, geometry, sealing("probabilities"))
    if "overlay" in paths:
        from PIL import Image

        _save_png(paths["overlay"], Image.fromarray(overlay_png(image, mask, label_names)), sealing("overlay"))
