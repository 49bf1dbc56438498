"""The measures the rule table reads, by the probes' registered names, with their valid intervals.

Each name may come as a summary value (at the backbone's output features, or once per model)
and, for per-block probes, as a profile (one value per block, bottom-up). ``None``: any finite
number. Unknown names are ignored by :func:`heuristics.advise`. The few names that no probe
measures are listed, with where they come from, in :data:`NOT_PROBES`.
"""

from __future__ import annotations

import math

_FRACTION = (0.0, 1.0)
_NON_NEGATIVE = (0.0, math.inf)
_NON_POSITIVE = (-math.inf, 0.0)

MEASURE_BOUNDS: dict[str, tuple[float, float] | None] = {
    # Per block and at the top.
    "linear_probe_accuracy": _FRACTION,  # the paper's central measure of fit; not a percentage
    # Standard deviation of the probe's accuracy over cross-validation folds (per block: the
    # noise against which a drop between blocks is judged).
    "linear_probe_accuracy_spread": _FRACTION,
    "knn_accuracy": _FRACTION,  # leave-one-out k-nearest-neighbour accuracy
    "pretraining_gain": (-1.0, 1.0),  # probe accuracy, pre-trained minus random-init features
    "logme": None,
    "h_score": _NON_NEGATIVE,  # tr(pinv(cov F) cov G), Bao et al. 2019
    "shrinkage_h_score": _NON_NEGATIVE,  # Ibrahim et al. 2022
    "transrate": None,  # coding-rate difference, Huang et al. 2022
    "gbc": _NON_POSITIVE,  # minus the summed Bhattacharyya coefficients, Pandy et al. 2022
    # Distance of the target's BatchNorm input statistics from the stored source ones: lower
    # is closer; its profile is the domain shift by depth. Missing for models without BN.
    "bn_shift": _NON_NEGATIVE,
    # Once per model.
    "leep": _NON_POSITIVE,  # Nguyen et al. 2020, a mean log-likelihood
    "nce": _NON_POSITIVE,  # Tran et al. 2019, a conditional entropy with its sign flipped
    "source_confidence": _FRACTION,  # mean max-softmax of the source (ImageNet) head
    "source_entropy": _FRACTION,  # mean entropy of the source head, normalised by log(Cs)
    # Accuracy of a short training from scratch: the paper's own measure, with the probe.
    "scratch_accuracy": _FRACTION,
}

# The measures above that no probe registers (every other name is a probe of probes/, by its
# registered name), with where each comes from.
NOT_PROBES: dict[str, str] = {
    "linear_probe_accuracy_spread": "the fold standard deviation of the linear_probe_accuracy "
                                    "probe (its spread), given as NAME_spread beside the value",
    "scratch_accuracy": "the test accuracy of a short training from scratch (recommender's "
                        "--scratch run), not a probe on frozen features",
}
