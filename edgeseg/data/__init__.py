"""Data: nnU-Net raw datasets, the preprocessing spec, phantom data."""
from edgeseg.data.io import Geometry, read_array, read_label, write_array
from edgeseg.data.nnunet import CaseData, NnUNetDataset, data_root
from edgeseg.data.phantom import write_phantom_dataset
from edgeseg.data.preprocessing import PreprocessSpec

__all__ = ["CaseData", "Geometry", "NnUNetDataset", "PreprocessSpec", "data_root", "read_array", "read_label",
           "write_array", "write_phantom_dataset"]
