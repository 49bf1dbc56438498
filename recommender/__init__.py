"""nbtl's recommender: files, models, torch, the CLI and the report.

The Python API::

    import recommender
    result = recommender.recommend("data/fashion-mnist-sample")
    result.recommendation.to_dict()["hyperparameters"]
    result.to_dict()          # the JSON document of ``nbtl-recommend --json``
    applied = recommender.apply_recommendation(model, result, num_classes=10)

Attributes are imported on first use, so ``import recommender`` stays light (no torch).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "recommend": "recommender.pipeline",
    "Result": "recommender.pipeline",
    "SCHEMA_VERSION": "recommender.pipeline",
    "load_dataset": "recommender.dataset",
    "Dataset": "recommender.dataset",
    "load_backbone": "recommender.backbones",
    "extract_features": "recommender.features",
    "apply_recommendation": "recommender.apply",
    "binary_default": "recommender.apply",
    "Applied": "recommender.apply",
    "ApplyError": "recommender.apply",
    "L2SPRegulariser": "recommender.apply",
    "NbtlError": "recommender.errors",
    "DatasetError": "recommender.errors",
    "ModelUnavailableError": "recommender.errors",
    "UsageError": "recommender.errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recommender' has no attribute {name!r}")
