"""The probe registry: one entry per measure, so adding a probe touches nothing else.

A probe is a pure function of named numpy inputs returning a float. Its entry says which
inputs it needs (a subset of :data:`INPUTS`, passed as keyword arguments of those names),
which direction is good, and how to label it in a report. The runner calls
:func:`compute` with every input it has; the probe receives exactly what it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from probes._checks import ProbeError
from probes._subsample import sample_inputs

# features, random_features: (N, D) per block; source_probs: (N, Cs) softmax of the source
# head; labels: (N,) of any hashable values; bn_stats: (4, K) per block, see probes.bn_shift.
INPUTS = ("features", "random_features", "source_probs", "labels", "bn_stats")
MAX_LABEL_CHARS = 10


@dataclass(frozen=True)
class Probe:
    """A registered measure of fit.

    Attributes
    ----------
    name : str
        Registry key, also the keyword a report or JSON uses.
    func : callable
        ``func(**{need: array for need in needs}) -> float``.
    needs : tuple of str
        The inputs ``func`` takes, a subset of :data:`INPUTS`.
    higher_is_better : bool
        Direction of the score.
    meaning : str
        One line for the report: what it measures and which direction is good.
    reference : str
        The paper that defines it.
    label : str
        Short column header (at most ``MAX_LABEL_CHARS`` characters).
    unit : str
        Unit of the value, e.g. ``"fraction"`` or ``"nats"``.
    spread : callable or None
        Optional ``spread(**inputs) -> (value, spread)`` with the same inputs as ``func``,
        e.g. mean and standard deviation over cross-validation folds.
    max_samples : int or None
        For a probe whose cost grows faster than N: above this many samples,
        :func:`compute` runs it on a seeded, stratified subset of this size (the rule is
        in :mod:`probes._subsample`) and records the size in ``Measurement.n_used``.
        None: always every sample.
    """

    name: str
    func: Callable[..., float]
    needs: tuple[str, ...]
    higher_is_better: bool
    meaning: str
    reference: str
    label: str
    unit: str
    spread: Callable[..., tuple[float, float]] | None = None
    max_samples: int | None = None

    def missing(self, inputs: dict) -> list[str]:
        """The inputs this probe needs that ``inputs`` lacks (absent or ``None``), in order."""
        return [need for need in self.needs if inputs.get(need) is None]


@dataclass(frozen=True)
class Measurement:
    """The value of one probe on one model, and its spread when the probe gives one.

    ``n_used`` is the number of samples it was computed on when that is a subset (the
    probe's ``max_samples``), None when every sample was used.
    """

    value: float
    spread: float | None = None
    n_used: int | None = None

    def to_dict(self) -> dict:
        return {"value": self.value, "spread": self.spread, "n_used": self.n_used}


PROBES: dict[str, Probe] = {}


def register(probe: Probe) -> Probe:
    """Add ``probe`` to :data:`PROBES` and return it.

    Raises
    ------
    ProbeError
        If the name is taken, ``needs`` names an unknown input, or the label is too long.
    """
    if probe.name in PROBES:
        raise ProbeError(f"probe {probe.name!r} is already registered; choose another name.")
    unknown = [need for need in probe.needs if need not in INPUTS]
    if unknown or not probe.needs:
        raise ProbeError(
            f"probe {probe.name!r}: needs {probe.needs!r} must be a non-empty subset of "
            f"{INPUTS!r}; unknown: {unknown!r}."
        )
    cap = probe.max_samples
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 2):
        raise ProbeError(
            f"probe {probe.name!r}: max_samples {cap!r} must be an integer >= 2 or None."
        )
    if len(probe.label) > MAX_LABEL_CHARS:
        raise ProbeError(
            f"probe {probe.name!r}: label {probe.label!r} has {len(probe.label)} characters, "
            f"at most {MAX_LABEL_CHARS} fit a table column; shorten it."
        )
    PROBES[probe.name] = probe
    return probe


def get_probe(name: str) -> Probe:
    """Return the probe registered as ``name``; ProbeError listing the known names if none."""
    try:
        return PROBES[name]
    except KeyError:
        known = ", ".join(sorted(PROBES)) or "(none registered)"
        raise ProbeError(f"unknown probe {name!r}; known probes: {known}.") from None


def list_probes() -> list[Probe]:
    """Every registered probe, in registration order."""
    return list(PROBES.values())


def compute(probe: Probe | str, **inputs: object) -> Measurement:
    """Run ``probe`` on the inputs it needs, taken by name from ``inputs``.

    Inputs the probe does not need are ignored; an input given as ``None`` counts as
    missing (e.g. no source head). A probe with ``max_samples`` runs on a seeded,
    stratified subset of that many samples when there are more (see
    :mod:`probes._subsample`); the Measurement's ``n_used`` then says how many.

    Raises
    ------
    ProbeError
        If an input the probe needs is missing, or the probe rejects its inputs.
    """
    if isinstance(probe, str):
        probe = get_probe(probe)
    missing = probe.missing(inputs)
    if missing:
        raise ProbeError(
            f"probe {probe.name!r} needs {', '.join(missing)}, which was not given; "
            f"it takes {', '.join(probe.needs)}."
        )
    if probe.max_samples is None:
        kwargs, n_used = {need: inputs[need] for need in probe.needs}, None
    else:
        kwargs, n_used = sample_inputs(probe.needs, inputs, probe.max_samples)
    if probe.spread is not None:
        value, spread = probe.spread(**kwargs)
        return Measurement(value=float(value), spread=float(spread), n_used=n_used)
    return Measurement(value=float(probe.func(**kwargs)), n_used=n_used)
