"""Measures of fit between frozen features and a target task: pure functions on arrays.

Every probe is registered in :data:`PROBES` with the inputs it needs; :func:`compute`
runs one on whatever inputs are at hand. Only numpy, scipy and scikit-learn are used.
"""

# isort: off
# Importing a probe's module registers it; this order is the order of the report's columns.
from probes.linear_probe import LinearProbeResult, linear_probe_accuracy, linear_probe_cv
from probes.logme import logme
from probes.leep import leep
from probes.gain import pretraining_gain

# isort: on
from probes._checks import ProbeError
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
    "LinearProbeResult",
    "Measurement",
    "Probe",
    "ProbeError",
    "compute",
    "get_probe",
    "leep",
    "linear_probe_accuracy",
    "linear_probe_cv",
    "list_probes",
    "logme",
    "pretraining_gain",
    "register",
]
