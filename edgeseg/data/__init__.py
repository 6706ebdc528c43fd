"""Data: nnU-Net raw datasets, the preprocessing spec, phantom data."""
from .io import Geometry, read_array, read_label, write_array
from .nnunet import CaseData, NnUNetDataset, data_root
from .phantom import write_phantom_dataset
from .preprocessing import PreprocessSpec

__all__ = ["CaseData", "Geometry", "NnUNetDataset", "PreprocessSpec", "data_root", "read_array", "read_label",
           "write_array", "write_phantom_dataset"]
