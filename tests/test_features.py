"""Layer-wise feature extraction: shapes, the source head, the cache and its key."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest

from recommender.errors import NbtlWarning
from recommender.models.features import cache_key, extract_features


@pytest.fixture(scope="module")
def few_paths(sample_dir):
    return sorted(sample_dir.glob("*/*.png"))[::25]  # 8 images across classes


@pytest.fixture(scope="module")
def features(few_paths, backbone):
    return extract_features(few_paths, backbone, batch_size=3, workers=0, use_cache=False)


def test_one_feature_matrix_per_block_with_the_blocks_width(features, few_paths, backbone):
    assert features.blocks == tuple(b.name for b in backbone.blocks)
    assert features.dims() == (16, 24, 40, 112, 320, 1280)
    assert all(f.shape[0] == len(few_paths) for f in features.pretrained)
    assert all(f.dtype == np.float32 for f in features.pretrained)


def test_untrained_twin_has_the_same_shapes_and_different_values(features):
    for pre, rnd in zip(features.pretrained, features.random_features):
        assert pre.shape == rnd.shape
        assert not np.allclose(pre, rnd)
        assert np.isfinite(rnd).all()


def test_source_probabilities_are_a_softmax_over_imagenet(features, few_paths):
    assert features.source_probs.shape == (len(few_paths), 1000)
    np.testing.assert_allclose(features.source_probs.sum(axis=1), 1.0, rtol=1e-5)


def test_batch_size_and_workers_do_not_change_the_features(features, few_paths, backbone):
    other = extract_features(few_paths, backbone, batch_size=8, workers=2, use_cache=False)
    for a, b in zip(features.pretrained, other.pretrained):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers: Linux")
def test_a_ctrl_c_while_the_loader_forks_its_workers_interrupts(few_paths, backbone):
    """A Ctrl-C in the DataLoader's worker start (here: from an after-fork hook) raises
    KeyboardInterrupt, not lost in the fork's hooks nor leaving a half-built iterator whose
    clean-up prints a traceback."""
    from _sigint import sigint_in_the_next_fork

    with sigint_in_the_next_fork(), pytest.raises(KeyboardInterrupt):
        extract_features(few_paths, backbone, batch_size=8, workers=2, use_cache=False)


def test_the_cpu_extracts_in_batches_of_8_unless_told(sample_dir, backbone):
    """bench_analysis --part batch: 8 is faster than 32 on a 2-core CPU, same features."""
    from recommender.models.features import default_batch_size

    paths = sorted(sample_dir.glob("*/*.png"))[::20]  # 10 images
    sizes: list[int] = []
    chosen = extract_features(paths, backbone, workers=0, device="cpu", use_cache=False,
                              on_batch=sizes.append)
    assert sizes == [8, 2]
    told: list[int] = []
    whole = extract_features(paths, backbone, batch_size=32, workers=0, device="cpu",
                             use_cache=False, on_batch=told.append)
    assert told == [10]
    for a, b in zip(chosen.pretrained, whole.pretrained):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert (default_batch_size("cpu"), default_batch_size("cuda:1")) == (8, 32)


def test_penultimate_features_match_the_models_own_pre_logits(features, few_paths, backbone):
    import torch
    from timm.data import create_transform

    from recommender.data.images import open_rgb

    transform = create_transform(**backbone.data_config)
    x = torch.stack([transform(open_rgb(p)) for p in few_paths[:2]])
    with torch.inference_mode():
        expected = backbone.model.forward_head(backbone.model.forward_features(x),
                                               pre_logits=True)
    np.testing.assert_allclose(features.pretrained[-1][:2], expected.numpy(), rtol=1e-4,
                               atol=1e-5)


def test_second_extraction_comes_from_the_cache(few_paths, backbone, private_cache):
    first = extract_features(few_paths, backbone, workers=0)
    second = extract_features(few_paths, backbone, workers=0)
    assert not first.from_cache and second.from_cache
    for a, b in zip(first.pretrained, second.pretrained):
        np.testing.assert_array_equal(a, b)
    assert list((private_cache / "features").glob("*.npz"))


def test_no_cache_neither_reads_nor_writes(few_paths, backbone, private_cache):
    before = set((private_cache / "features").glob("*")) if (
        private_cache / "features").exists() else set()
    result = extract_features(few_paths[:2], backbone, workers=0, use_cache=False)
    after = set((private_cache / "features").glob("*")) if (
        private_cache / "features").exists() else set()
    assert not result.from_cache and before == after


def test_cache_key_changes_when_an_image_file_changes(few_paths, backbone, tmp_path):
    copies = []
    for path in few_paths[:2]:
        copies.append(tmp_path / path.name)
        shutil.copy(path, copies[-1])
    key = cache_key(copies, backbone)
    stat = copies[0].stat()
    os.utime(copies[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache_key(copies, backbone) != key


def test_cache_key_depends_on_the_preprocessing(few_paths, backbone):
    from recommender.models.backbones import load_backbone

    assert cache_key(few_paths, backbone) != cache_key(few_paths, load_backbone(image_size=128))


def test_cache_key_depends_on_the_precision(few_paths, backbone):
    """Half precision on a GPU gives other features than float32 on the CPU."""
    from recommender.models.features import _precision

    assert _precision("cuda:0") == "float16" and _precision("cpu") == "float32"
    assert cache_key(few_paths, backbone, "float16") != cache_key(few_paths, backbone)


def test_features_come_back_in_the_callers_order_from_one_canonical_entry(few_paths, backbone,
                                                                         private_cache):
    import numpy as np

    paths = few_paths[:4]
    forward = extract_features(paths, backbone, workers=0)
    backward = extract_features(paths[::-1], backbone, workers=0)
    assert backward.from_cache  # the same images in another order: the same entry
    for a, b in zip(forward.pretrained, backward.pretrained):
        np.testing.assert_array_equal(a[::-1], b)
    np.testing.assert_array_equal(forward.source_probs[::-1], backward.source_probs)
    # The twin's rows name the same images in the caller's order.
    for a, b in zip(forward.random_features, backward.random_features):
        np.testing.assert_array_equal(a[np.argsort(forward.twin_rows())],
                                      b[np.argsort(backward.twin_rows())][::-1])


def test_the_twin_sees_every_image_up_to_the_floor_then_a_seeded_subset():
    import numpy as np

    from recommender.models.features import TWIN_FLOOR, twin_subset

    np.testing.assert_array_equal(twin_subset(TWIN_FLOOR), np.arange(TWIN_FLOOR))
    rows = twin_subset(2000)
    assert rows.size == 250 and np.all(np.diff(rows) > 0) and rows.max() < 2000
    np.testing.assert_array_equal(rows, twin_subset(2000))  # seeded
    assert twin_subset(40_000).size == 5000  # N / 8 beyond 2,000


def test_up_to_the_floor_the_batchnorm_moments_are_over_every_image(features, few_paths,
                                                                     backbone):
    import torch
    from timm.data import create_transform

    from recommender.data.images import open_rgb
    from recommender.models.bnstats import BatchNormRecorder

    assert features.random_rows is None  # 8 images: under the floor, the twin saw them all
    transform = create_transform(**backbone.data_config, is_training=False)
    x = torch.stack([transform(open_rgb(p)) for p in few_paths])
    model = backbone.model.eval().to(memory_format=torch.channels_last)
    try:
        with torch.inference_mode(), BatchNormRecorder(model, backbone.blocks) as recorder:
            model(x.to(memory_format=torch.channels_last))  # one batch of all of them
    finally:
        model.to(memory_format=torch.contiguous_format)
    for got, want in zip(features.bn_stats, recorder.per_block()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_beyond_the_floor_the_batchnorm_moments_are_over_the_twins_images(
        features, few_paths, backbone, monkeypatch):
    import recommender.models.features as features_mod

    monkeypatch.setattr(features_mod, "TWIN_FLOOR", 3)
    # 8 images in batches of 2: the twin's 3 (rows 2, 3, 4) are the first two batches.
    subset = extract_features(few_paths, backbone, batch_size=2, workers=0, use_cache=False)
    rows = subset.twin_rows()
    np.testing.assert_array_equal(rows, [2, 3, 4])
    alone = extract_features([few_paths[i] for i in rows], backbone, batch_size=2, workers=0,
                             use_cache=False)
    assert alone.random_rows is None
    for got, want in zip(subset.bn_stats, alone.bn_stats):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # ... and not those of all 8 images (the features fixture, under the default floor).
    assert not np.allclose(subset.bn_stats[0][:2], features.bn_stats[0][:2], rtol=1e-3)
    for got, want in zip(subset.random_features, alone.random_features):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_unfolded_the_batchnorm_moments_are_still_over_the_twins_images_only(
        few_paths, backbone, monkeypatch):
    """A model whose BatchNorm cannot be folded runs every batch as loaded, hooks and all:
    the moments still see the twin's images only."""
    import recommender.models.features as features_mod

    monkeypatch.setattr(features_mod, "TWIN_FLOOR", 3)
    monkeypatch.setattr(features_mod, "fold_batchnorm", lambda model, example: None)
    subset = extract_features(few_paths, backbone, batch_size=2, workers=0, use_cache=False)
    alone = extract_features([few_paths[i] for i in subset.twin_rows()], backbone,
                             batch_size=2, workers=0, use_cache=False)
    for got, want in zip(subset.bn_stats, alone.bn_stats):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_the_twins_images_come_first_in_batches_of_their_own(few_paths, backbone, monkeypatch):
    """Its 3 images of 8 (rows 2, 3, 4) make the first batch (of 4): the twin runs on that
    one alone, the other 5 images follow in batches of 4 and 1; in batches of 2 the twin runs
    on 2, then 1. Either way every image gets the features it gets in any other batch, in
    its own row."""
    import torch

    import recommender.models.features as features_mod

    monkeypatch.setattr(features_mod, "TWIN_FLOOR", 3)
    seen: dict[str, list[int]] = {"pretrained": [], "twin": []}
    real = features_mod._forward

    head = backbone.model.get_classifier().weight  # the same in the BatchNorm-folded copy

    def spy(model, batch, num_blocks):
        pretrained = torch.equal(model.get_classifier().weight, head)
        seen["pretrained" if pretrained else "twin"].append(len(batch))
        return real(model, batch, num_blocks)

    monkeypatch.setattr(features_mod, "_forward", spy)
    fours = extract_features(few_paths, backbone, batch_size=4, workers=0, use_cache=False)
    assert seen == {"pretrained": [3, 4, 1], "twin": [3]}
    seen = {"pretrained": [], "twin": []}
    pairs = extract_features(few_paths, backbone, batch_size=2, workers=0, use_cache=False)
    assert seen == {"pretrained": [2, 1, 2, 2, 1], "twin": [2, 1]}
    np.testing.assert_array_equal(fours.twin_rows(), [2, 3, 4])
    for got, want in zip(fours.random_features, pairs.random_features):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(features_mod, "TWIN_FLOOR", 8)  # all 8 in one batch, in row order
    models = []
    monkeypatch.setattr(features_mod, "_forward",
                        lambda model, *args: models.append(model) or real(model, *args))
    one_batch = extract_features(few_paths, backbone, batch_size=8, workers=0, use_cache=False)
    for got, want in zip(fours.pretrained, one_batch.pretrained):  # back in row order
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fours.source_probs, one_batch.source_probs, rtol=1e-4,
                               atol=1e-6)
    # Up to the floor every image is the twin's: the models as loaded, nothing folded, so
    # the features are those of every earlier version.
    assert models[0] is backbone.model and len(models) == 2


def test_a_damaged_cache_file_is_replaced(few_paths, backbone, private_cache):
    paths = few_paths[2:4]
    extract_features(paths, backbone, workers=0)
    target = private_cache / "features" / f"{cache_key(paths, backbone)}.npz"
    target.write_bytes(b"not a zip file")
    with pytest.warns(NbtlWarning, match="damaged features file"):
        again = extract_features(paths, backbone, workers=0)
    assert not again.from_cache
    assert extract_features(paths, backbone, workers=0).from_cache


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_that_breaks_after_the_scan_is_a_clean_dataset_error(
        few_paths, backbone, tmp_path, workers):
    from recommender.errors import DatasetError

    paths = []
    for path in few_paths[:3]:
        paths.append(tmp_path / path.name)
        shutil.copy(path, paths[-1])
    paths[1].write_bytes(b"")  # emptied after the dataset was scanned
    with pytest.raises(DatasetError) as info:
        extract_features(paths, backbone, batch_size=2, workers=workers, use_cache=False)
    assert str(paths[1]) in info.value.message and "empty file" in info.value.message
    assert "Traceback" not in str(info.value)


def test_cuda_without_a_gpu_is_a_usage_error(monkeypatch):
    import torch

    from recommender.errors import UsageError
    from recommender.models.features import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(UsageError, match="no CUDA GPU"):
        resolve_device("cuda")
