"""Backbones and what is read off them: pre-trained models (:mod:`.backbones`), layer-wise
features (:mod:`.features`) and BatchNorm statistics (:mod:`.bnstats`)."""
