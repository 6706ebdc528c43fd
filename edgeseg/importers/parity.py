"""An import checked against the framework's own inference: the same images through the framework's pipeline
and through edgeseg's preprocessing, the label maps compared at the model's input size."""
from __future__ import annotations

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.importers.base import Imported

_WHERE = {False: "the model's input size", True: "the image's own size (the whole inference path)"}


def check_parity(imported: Imported, dataset, case_ids: list[str]) -> dict:
    """Per-label Dice agreement and pixel agreement of the two paths on ``case_ids`` (mean and worst case)."""
    import torch

    from edgeseg.inference import predict_mask, torch_predictor

    spec, labels = imported.spec, imported.spec.label_names
    dice: dict[str, list[float]] = {name: [] for name in labels[1:]}
    pixels = []
    for case_id in case_ids:
        files = dataset.cases[case_id].image_files
        try:
            theirs = imported.reference(files[0] if len(files) == 1 else files)
        except Exception as exc:  # the framework's own pipeline: its failure is a finding, reported in one line
            raise EdgesegError(f"{imported.source['framework']}'s own pipeline failed on {case_id}: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}") from None
        image, geometry = dataset.load_image(case_id)
        if imported.native:  # the whole inference path, in the image's own geometry
            ours = predict_mask(torch_predictor(imported.model), image, spec.preprocessing, spec.spatial_dims,
                               spacing=geometry.spacing)
        else:
            with torch.inference_mode():
                x = torch.from_numpy(spec.preprocessing(image)[None])
                ours = imported.model(x).argmax(1)[0].numpy().astype(np.uint8)
        if ours.shape != theirs.shape:
            return {"cases": 0, "error": f"shapes differ: edgeseg {ours.shape}, framework {theirs.shape}"}
        pixels.append(float((ours == theirs).mean()))
        for value, name in enumerate(labels[1:], start=1):
            a, b = ours == value, theirs == value
            total = a.sum() + b.sum()
            dice[name].append(1.0 if total == 0 else float(2 * (a & b).sum() / total))
    return {"cases": len(case_ids), "definition": "Dice of each label between edgeseg's and the framework's label "
            f"maps at {_WHERE[imported.native]}; pixel: share of pixels with the same label",
            "pixel_agreement": {"mean": float(np.mean(pixels)), "min": float(np.min(pixels))},
            "dice": {k: {"mean": float(np.mean(v)), "min": float(np.min(v))} for k, v in dice.items()}}
