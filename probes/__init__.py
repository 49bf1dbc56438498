"""Measures of fit between frozen features and a target task: pure functions on arrays.

Every probe is registered in :data:`PROBES` with the inputs it needs; :func:`compute`
runs one on whatever inputs are at hand. Only numpy, scipy and scikit-learn are used.
"""

# isort: off
# Importing a probe's module registers it; this order is the order of the report's columns.
from probes.linear_probe import LinearProbeResult, linear_probe_accuracy, linear_probe_cv
from probes.knn import knn_accuracy
from probes.logme import logme
from probes.h_score import h_score, shrinkage_h_score
from probes.transrate import transrate
from probes.gbc import gbc
from probes.gain import pretraining_gain
from probes.cka import block_cka, linear_cka
from probes.bn_shift import bn_shift
from probes.leep import leep
from probes.nce import nce
from probes.source_head import source_confidence, source_entropy

# isort: on
from probes._checks import ProbeError
from probes._subsample import SUBSAMPLE_SEED
from probes.registry import (
    INPUTS,
    PROBES,
    Measurement,
    Probe,
    compute,
    get_probe,
    list_probes,
    register,
)

__all__ = [
    "INPUTS",
    "PROBES",
    "SUBSAMPLE_SEED",
    "LinearProbeResult",
    "Measurement",
    "Probe",
    "ProbeError",
    "block_cka",
    "bn_shift",
    "compute",
    "gbc",
    "get_probe",
    "h_score",
    "knn_accuracy",
    "leep",
    "linear_cka",
    "linear_probe_accuracy",
    "linear_probe_cv",
    "list_probes",
    "logme",
    "nce",
    "pretraining_gain",
    "register",
    "shrinkage_h_score",
    "source_confidence",
    "source_entropy",
    "transrate",
]
