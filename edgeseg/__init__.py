"""edgeseg: compress trained medical segmentation models for edge devices and measure what it cost."""
__version__ = "0.1.0"
