"""``edgeseg infer``: runtime-only segmentation of PNG/JPEG/TIFF, NIfTI and DICOM inputs with a bundle."""
from edgeseg.infer.pipeline import InferConfig, run_infer

__all__ = ["InferConfig", "run_infer"]
