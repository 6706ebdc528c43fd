"""Explanation drift: does a compressed artifact still look where the FP32 model looked? (``edgeseg explain``)"""
from edgeseg.explanation.maps import MapSettings
from edgeseg.explanation.run import ExplainConfig, ExplainOutcome, run_explain

__all__ = ["ExplainConfig", "ExplainOutcome", "MapSettings", "run_explain"]
