"""nbtl's recommender: files, models, torch, the CLI and the report.

The Python API::

    import recommender
    result = recommender.recommend("data/fashion-mnist-sample")
    result.recommendation.to_dict()["hyperparameters"]
    result.to_dict()          # the JSON document of ``nbtl-recommend --json``
    ranking = recommender.rank("data/fashion-mnist-sample",
                               models=["tf_efficientnet_lite0", "tf_efficientnet_lite1"])
    applied = recommender.apply_recommendation(model, result)  # a head for its classes
    saved = recommender.load_recommendation("rec.json")  # from nbtl-recommend --json
    moved = recommender.block_similarity(model, finetuned, test_images)  # CKA per block

The sub-packages: :mod:`recommender.data` (dataset scan, image decoding, data splits),
:mod:`recommender.models` (backbones, layer-wise features, BatchNorm statistics) and
:mod:`recommender.finetune` (training loop, applying a recommendation, runs, the comparison
with the binary default, the search, the scratch training); :mod:`recommender.config` holds
the run's options, :mod:`recommender.analysis` the probes per block, and
:mod:`recommender.pipeline` ties them together for :mod:`recommender.cli` and
:mod:`recommender.report`.

Attributes are imported on first use, so ``import recommender`` stays light (no torch).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "recommend": "recommender.pipeline",
    "Result": "recommender.pipeline",
    "SCHEMA_VERSION": "recommender.pipeline",
    "rank": "recommender.ranking",
    "Ranking": "recommender.ranking",
    "Options": "recommender.config",
    "ValidationOptions": "recommender.config",
    "SearchOptions": "recommender.config",
    "load_dataset": "recommender.data.dataset",
    "Dataset": "recommender.data.dataset",
    "load_backbone": "recommender.models.backbones",
    "extract_features": "recommender.models.features",
    "apply_recommendation": "recommender.finetune.apply",
    "Applied": "recommender.finetune.apply",
    "ApplyError": "recommender.finetune.apply",
    "L2SPRegulariser": "recommender.finetune.apply",
    "load_recommendation": "recommender.finetune.apply",
    "block_similarity": "recommender.finetune.similarity",
    "BlockSimilarity": "recommender.finetune.similarity",
    "SavedRecommendation": "recommender.finetune.apply",
    "Phase": "recommender.finetune.loop",
    "lr_scheduler": "recommender.finetune.loop",
    "transforms": "recommender.finetune.loop",
    "binary_default": "heuristics",
    "Hyperparameters": "heuristics",
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
