"""Issue K: the end-to-end graph's masks against the host path's, per artifact, on every image of a split.

    python benchmarks/suites/end_to_end_parity.py BUNDLE --data DATASET [--split val] --out parity.json

Host path: the image read as float, PreprocessSpec, the artifact's logits model, restore, label_map (what `infer
--probabilities` does). End to end: the uint8 image as read, through the artifact's end-to-end graph. Reported per
artifact: per-label Dice agreement between the two masks (min and mean over images where the label is present in
either), over the split's pixels pooled, and the lowest pixel agreement.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from edgeseg.bundle import load_bundle, manifest_artifacts
    from edgeseg.checkpoint import CheckpointSpec
    from edgeseg.data.nnunet import NnUNetDataset
    from edgeseg.inference import label_map
    from edgeseg.metrics import dice_from_counts, overlap_counts
    from edgeseg.targets import get_target

    manifest = load_bundle(args.bundle)
    spec = CheckpointSpec.from_manifest(manifest)
    dataset = NnUNetDataset(args.data, require_labels=False)
    cases = dataset.split(args.split)
    labels = list(range(1, spec.num_classes))
    result = {"bundle": str(args.bundle), "split": args.split, "cases": len(cases), "artifacts": {}}
    for artifact in manifest_artifacts(manifest):
        target = get_target(artifact.runtime)
        graph = target.load_end_to_end(args.bundle, artifact, args.threads)
        if graph is None:
            continue
        model = target.load(args.bundle, artifact, args.threads)
        dice: dict[int, list[float]] = {k: [] for k in labels}
        pixel, pooled = [], np.zeros((spec.num_classes, 3), np.int64)
        for cid in cases:
            image, _ = dataset.load_image(cid, as_stored=True)
            logits = model(spec.preprocessing(image)[None])[0]
            host = label_map(spec.preprocessing.restore(logits, image.shape[1:]))
            got = graph(np.ascontiguousarray(np.moveaxis(image, 0, -1)))
            pixel.append(float((got == host).mean()))
            counts = overlap_counts(got.astype(np.int64), host.astype(np.int64), spec.num_classes)
            pooled += counts
            for k, d in zip(labels, dice_from_counts(counts)[1:]):
                if counts[k, 1] + counts[k, 2]:  # the label in either mask
                    dice[k].append(float(d))
        result["artifacts"][artifact.name] = {
            "min_pixel_agreement": min(pixel),
            "dice_agreement": {spec.label_names[k]: {"split": float(dice_from_counts(pooled)[k]), "min": min(v),
                                                     "mean": float(np.mean(v)), "images": len(v)}
                               for k, v in dice.items() if v}}
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["artifacts"], indent=1))


if __name__ == "__main__":
    main()
