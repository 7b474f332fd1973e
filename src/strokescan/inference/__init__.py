"""Inference: the :class:`Predictor` every interface calls, its segmentation and quantification steps, and
the one result schema. Imports core, io, preprocessing and models; never datasets, training or evaluation."""

from strokescan.inference.predictor import PreparedScan, Predictor
from strokescan.inference.results import SCHEMA_VERSION, ScanResult, SliceResult

__all__ = ["SCHEMA_VERSION", "PreparedScan", "Predictor", "ScanResult", "SliceResult"]
