"""What every area of the rule table shares: the sources it cites, the binary practice's values,
and how it grades confidence."""

from __future__ import annotations

from heuristics.types import CONFIDENCE_LEVELS, Confidence

# Margins (in the deciding measure's units) within this many bands of a threshold give low
# confidence, beyond CONFIDENCE_HIGH_BANDS bands high. Provisional nbtl choice, to be
# calibrated by the benchmark issue.
CONFIDENCE_HIGH_BANDS = 3.0

PLESTED_2021 = "Plested, Shen, Gedeon 2021, Non-binary deep transfer learning (arXiv 2107.08585)"
CODE = ("official code of Plested et al. 2021 (github.com/XuyangSHEN/"
        "Non-binary-deep-transfer-learning-for-image-classification)")
BINARY = ("common binary practice, the default Plested et al. 2021 improve on: every block "
          "transferred, new classifier, lr 0.01, momentum 0.9, weight decay 1e-4")
LI_2018 = "Li, Grandvalet, Davoine, ICML 2018 (L2-SP)"
LI_2020 = "Li, Chaudhari et al., ICLR 2020 (effective learning rate by domain similarity)"
YOSINSKI_2014 = "Yosinski et al., NeurIPS 2014 (early features general, top ones specific)"
PLESTED_2019 = "Plested & Gedeon, ICONIP 2019 (layers to transfer depend on target size)"
FASTAI = ("fastai discriminative learning rates; tllib (Transfer-Learning-Library) backbone "
          "at 0.1x the head")
KORNBLITH_2019 = "Kornblith, Shlens, Le, CVPR 2019 (Do better ImageNet models transfer better?)"
KUMAR_2022 = "Kumar et al., ICLR 2022 (LP-FT: fine-tuning can distort pre-trained features)"
HENDRYCKS_2017 = ("Hendrycks & Gimpel, ICLR 2017 (the maximum softmax probability is lower on "
                  "out-of-distribution inputs)")
ADABN_2016 = "Li et al. 2016, AdaBN (BatchNorm statistics as a measure of domain shift)"
LOSHCHILOV_2017 = "Loshchilov & Hutter, ICLR 2017 (SGDR: cosine learning-rate decay)"
SZEGEDY_2016 = "Szegedy et al., CVPR 2016 (label smoothing 0.1)"

# The binary practice's values, those BINARY names (heuristics.baseline builds the whole binary
# default from them): the common fine-tuning practice -- every layer transferred, one learning
# rate, L2 weight decay toward zero. Li, Grandvalet, Davoine 2018 (L2-SP) fine-tune at lr 0.01,
# momentum 0.9; Kornblith, Shlens, Le 2019 ("Do Better ImageNet Models Transfer Better?") use
# Nesterov momentum 0.9 and search lr in [1e-4, 0.1] and weight decay in [1e-6, 1e-3].
BINARY_LR = 0.01
BINARY_WEIGHT_DECAY = 1e-4
BINARY_MOMENTUM = 0.9


def by_margin(margin: float, band: float) -> Confidence:
    """Confidence from the distance of the deciding measure to its threshold."""
    distance = abs(margin)
    if distance < band:
        return "low"
    return "medium" if distance < CONFIDENCE_HIGH_BANDS * band else "high"


def at_most(level: Confidence, cap: Confidence) -> Confidence:
    """The weaker of two confidences (a stand-in measure never gives ``high``)."""
    return min(level, cap, key=CONFIDENCE_LEVELS.index)


def always(_view) -> bool:
    return True
