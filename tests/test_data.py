"""Tests of spherelab.data: names, MNIST-1D, synthetic data, transforms, batching, augmentation."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from spherelab.data import base, mnist1d_cache
from spherelab.data import load as data
from spherelab.data.augment import augment_images
from spherelab.data.base import DataError
from spherelab.data.batching import BatchSampler, fixed_batches
from spherelab.data.load import Dataset, available_datasets, load_dataset

SMALL = "synthetic:2x5x5:60:20:4"


@pytest.fixture(autouse=True)
def isolated_roots(tmp_path, monkeypatch):
    """No test sees the real home cache, $SPHERELAB_DATA or /usr/share/datasets."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(base.ENV_DATA, raising=False)
    monkeypatch.setattr(base, "SYSTEM_DATA", tmp_path / "system")


@pytest.fixture(scope="module")
def mnist1d_dir(tmp_path_factory):
    """One real MNIST-1D generation per module, cached in its own data_dir."""
    root = tmp_path_factory.mktemp("mnist1d_root")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(root / "home"))
        patch.delenv(base.ENV_DATA, raising=False)
        patch.setattr(base, "SYSTEM_DATA", root / "system")
        first = load_dataset("mnist1d", data_dir=root, normalize=False)
    return root, first


def test_available_datasets_lists_every_loader_and_the_npz_pattern():
    names = available_datasets()
    for name in ("mnist1d", "fashion_mnist", "cifar10", "cifar100", "synthetic", "npz:PATH"):
        assert name in names


def test_unknown_name_raises_data_error_listing_the_valid_names():
    with pytest.raises(DataError) as err:
        load_dataset("imagenet")
    assert "imagenet" in str(err.value)
    for name in available_datasets():
        assert name in str(err.value)


def test_mnist1d_has_the_standard_shapes_and_ten_classes(mnist1d_dir):
    _, ds = mnist1d_dir
    assert ds.name == "mnist1d" and ds.input_shape == (40,)
    assert (ds.n_train, ds.n_test, ds.num_classes) == (4000, 1000, 10)
    assert set(ds.y_train.tolist()) == set(range(10)) == set(ds.y_test.tolist())


def test_mnist1d_second_load_reuses_the_cache_without_generating(mnist1d_dir, monkeypatch):
    root, first = mnist1d_dir
    monkeypatch.setattr(mnist1d_cache, "_generate", lambda args: pytest.fail("regenerated"))
    again = load_dataset("mnist1d", data_dir=root, normalize=False)
    assert torch.equal(again.x_train, first.x_train) and torch.equal(again.y_test, first.y_test)


def test_mnist1d_generation_leaves_the_global_rngs_alone(tmp_path, monkeypatch):
    import mnist1d.data

    def fake_make_dataset(args):
        np.random.seed(args.seed)  # what mnist1d does internally
        random.seed(args.seed)
        zeros = np.zeros((10, 40))
        return {"x": zeros, "y": np.arange(10), "x_test": zeros, "y_test": np.arange(10)}

    monkeypatch.setattr(mnist1d.data, "make_dataset", fake_make_dataset)
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.get_state()[1].copy(), random.getstate()
    load_dataset("mnist1d", data_dir=tmp_path)
    assert np.array_equal(np.random.get_state()[1], expected_np)
    assert random.getstate() == expected_py


def test_synthetic_is_deterministic_and_parses_the_size_spec():
    a = load_dataset(SMALL, seed=0)
    b = load_dataset(SMALL, seed=7)  # the data are fixed; seed only drives subset/noise
    assert a.name == "synthetic:2x5x5:60:20:4" and a.input_shape == (2, 5, 5)
    assert (a.n_train, a.n_test, a.num_classes) == (60, 20, 4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    default = load_dataset("synthetic:3x32x32:8")
    assert default.input_shape == (3, 32, 32) and default.n_train == 8
    assert default.num_classes == 10


@pytest.mark.parametrize(
    "spec", ["synthetic:3xAx3", "synthetic:3:0", "synthetic:4:10:5:1", "synthetic:1:2:3:4:5"]
)
def test_bad_synthetic_spec_raises_data_error_with_the_grammar(spec):
    with pytest.raises(DataError, match="SHAPE"):
        load_dataset(spec)


def test_synthetic_labels_are_learnable_by_a_linear_model():
    ds = load_dataset("synthetic:8:2000:500:4", dtype=torch.float64)
    onehot = torch.nn.functional.one_hot(ds.y_train, 4).double()
    weights = torch.linalg.lstsq(ds.x_train, onehot).solution
    accuracy = (ds.x_test @ weights).argmax(1).eq(ds.y_test).double().mean().item()
    assert accuracy > 0.75  # chance is 0.25


def test_train_subset_is_seeded_nested_and_in_original_order():
    full = load_dataset(SMALL, normalize=False)
    small = load_dataset(SMALL, train_subset=10, seed=3, normalize=False)
    larger = load_dataset(SMALL, train_subset=30, seed=3, normalize=False)
    other = load_dataset(SMALL, train_subset=10, seed=4, normalize=False)
    rows = {tuple(row.flatten().tolist()): i for i, row in enumerate(full.x_train)}
    picked = [rows[tuple(row.flatten().tolist())] for row in small.x_train]
    assert small.n_train == 10 and picked == sorted(picked)
    assert torch.equal(small.y_train, full.y_train[picked])
    assert set(picked) <= {rows[tuple(r.flatten().tolist())] for r in larger.x_train}
    assert not torch.equal(small.x_train, other.x_train)
    assert torch.equal(small.x_test, full.x_test)


@pytest.mark.parametrize("k", [0, 61, -1, 2.5, True])
def test_bad_train_subset_raises_data_error_with_the_valid_range(k):
    with pytest.raises(DataError, match=r"\[1, 60\]"):
        load_dataset(SMALL, train_subset=k)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0])
def test_label_noise_changes_exactly_that_fraction_and_no_test_label(fraction):
    clean = load_dataset(SMALL)
    noisy = load_dataset(SMALL, label_noise=fraction, seed=5)
    changed = (clean.y_train != noisy.y_train).sum().item()
    assert changed == round(fraction * 60)
    assert noisy.y_train.min() >= 0 and noisy.y_train.max() < 4
    assert torch.equal(clean.y_test, noisy.y_test)


def test_label_noise_is_seeded():
    a, b = (load_dataset(SMALL, label_noise=0.3, seed=s) for s in (1, 1))
    c = load_dataset(SMALL, label_noise=0.3, seed=2)
    assert torch.equal(a.y_train, b.y_train) and not torch.equal(a.y_train, c.y_train)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan"), "0.2"])
def test_bad_label_noise_raises_data_error(fraction):
    with pytest.raises(DataError, match="label_noise"):
        load_dataset(SMALL, label_noise=fraction)


def test_images_are_standardized_per_channel_with_the_train_statistics(tmp_path):
    rng = np.random.default_rng(0)
    scale = np.array([1.0, 5.0, 0.1])[None, :, None, None]
    x_train, x_test = rng.normal(2.0, 1.0, (40, 3, 4, 4)) * scale, rng.normal(size=(9, 3, 4, 4))
    labels = np.zeros(40, int), np.zeros(9, int)
    np.savez(
        tmp_path / "d.npz", x_train=x_train, y_train=labels[0], x_test=x_test, y_test=labels[1]
    )
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}", dtype=torch.float64)
    assert torch.allclose(
        ds.x_train.mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-12
    )
    assert torch.allclose(
        ds.x_train.std((0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-12
    )
    mean = x_train.mean((0, 2, 3), keepdims=True)
    std = x_train.std((0, 2, 3), keepdims=True)
    assert torch.allclose(ds.x_test, torch.from_numpy((x_test - mean) / std), atol=1e-12)


def test_vectors_are_standardized_with_one_global_mean_and_std(tmp_path):
    x_train = np.random.default_rng(0).normal(size=(30, 6)) * np.arange(1, 7)
    zeros = np.zeros(30, int)
    np.savez(tmp_path / "v.npz", x_train=x_train, y_train=zeros, x_test=x_train, y_test=zeros)
    ds = load_dataset(f"npz:{tmp_path / 'v.npz'}", dtype=torch.float64)
    expected = (x_train - x_train.mean()) / x_train.std()
    assert torch.allclose(ds.x_train, torch.from_numpy(expected), atol=1e-12)


def test_dataset_follows_the_requested_dtype_and_keeps_int64_labels():
    ds = load_dataset(SMALL, dtype=torch.float64, device=torch.device("cpu"))
    assert ds.x_train.dtype == ds.x_test.dtype == torch.float64
    assert ds.y_train.dtype == ds.y_test.dtype == torch.int64
    with pytest.raises(DataError, match="dtype"):
        load_dataset(SMALL, dtype=torch.int32)


def test_dataset_with_mismatched_splits_raises_data_error():
    with pytest.raises(DataError, match="sample counts"):
        Dataset(
            "x",
            torch.zeros(3, 2),
            torch.zeros(2, dtype=torch.long),
            torch.zeros(1, 2),
            torch.zeros(1, dtype=torch.long),
            2,
        )


def test_sampler_visits_every_index_once_per_epoch_with_a_short_last_batch():
    sampler = BatchSampler(10, 3, torch.Generator().manual_seed(0))
    batches = sampler.epoch_indices()
    assert [len(b) for b in batches] == [3, 3, 3, 1] and sampler.steps_per_epoch == 4
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(10))
    assert BatchSampler(50000, 128, torch.Generator()).steps_per_epoch == 391


@pytest.mark.parametrize("batch_size", [0, -1, 10, 50])
def test_full_batch_mode_gives_one_ordered_batch(batch_size):
    generator = torch.Generator().manual_seed(0)
    before = generator.get_state()
    sampler = BatchSampler(10, batch_size, generator)
    (batch,) = sampler.epoch_indices()
    assert sampler.steps_per_epoch == len(sampler) == 1 and torch.equal(batch, torch.arange(10))
    assert torch.equal(generator.get_state(), before)


def test_same_seed_gives_the_same_permutations_and_epochs_differ():
    first, second = (BatchSampler(20, 8, torch.Generator().manual_seed(4)) for _ in range(2))
    a0, a1 = torch.cat(first.epoch_indices()), torch.cat(first.epoch_indices())
    b0 = torch.cat(second.epoch_indices())
    assert torch.equal(a0, b0) and not torch.equal(a0, a1)


def test_state_round_trip_replays_the_next_epoch_bitwise():
    sampler = BatchSampler(30, 7, torch.Generator().manual_seed(9))
    sampler.epoch_indices()
    state = sampler.state_dict()
    expected = sampler.epoch_indices()
    resumed = BatchSampler(30, 7, torch.Generator().manual_seed(0))
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(resumed.epoch_indices(), expected, strict=True))
    with pytest.raises(DataError, match="batch_size=7"):
        BatchSampler(30, 8, torch.Generator()).load_state_dict(state)


def test_fixed_batches_are_consecutive_slices_covering_the_data():
    slices = fixed_batches(50000, 128)
    assert len(slices) == 391 and slices[0] == slice(0, 128) and slices[-1] == slice(49920, 50000)
    assert all(a.stop == b.start for a, b in itertools.pairwise(slices))
    assert fixed_batches(10, 0) == fixed_batches(10, 10) == [slice(0, 10)]


def _crops_of(image, padding):
    padded = torch.nn.functional.pad(image, (padding,) * 4)
    h, w = image.shape[-2:]
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            yield crop
            yield crop.flip(-1)


def test_every_augmented_image_is_a_crop_of_the_zero_padded_image_maybe_flipped():
    x = torch.rand(16, 2, 5, 6, dtype=torch.float64)
    out = augment_images(x, torch.Generator().manual_seed(0), padding=2, mode="zeros")
    assert out.shape == x.shape
    for image, augmented in zip(x, out, strict=True):
        assert any(torch.equal(augmented, crop) for crop in _crops_of(image, 2))
    assert sum(torch.equal(a, b) for a, b in zip(x, out, strict=True)) < len(x)


def test_augmentation_is_seeded_and_flips_some_images_but_not_all():
    x = torch.rand(64, 1, 4, 4, dtype=torch.float64)
    a, b = (augment_images(x, torch.Generator().manual_seed(1), padding=0) for _ in range(2))
    assert torch.equal(a, b)
    flipped = sum(torch.equal(o, i.flip(-1)) for o, i in zip(a, x, strict=True))
    assert 0 < flipped < 64
    reflected = augment_images(x, torch.Generator().manual_seed(1), padding=3, mode="reflect")
    assert reflected.shape == x.shape


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [((3, 4, 4), {}), ((2, 1, 4, 4), {"padding": 4}), ((2, 1, 4, 4), {"mode": "wrap"})],
)
def test_bad_augmentation_input_raises_data_error(shape, kwargs):
    with pytest.raises(DataError):
        augment_images(torch.zeros(shape), torch.Generator(), **kwargs)


def test_public_entry_point_reexports_the_error_type():
    assert data.DataError is base.DataError and issubclass(DataError, ValueError)


def test_test_subset_is_fixed_across_seeds_and_checked():
    a = load_dataset("synthetic:4:100:50:3", test_subset=10, seed=0)
    b = load_dataset("synthetic:4:100:50:3", test_subset=10, seed=5)
    assert len(a.y_test) == 10 and torch.equal(a.x_test, b.x_test)
    with pytest.raises(DataError, match="test_subset=60"):
        load_dataset("synthetic:4:100:50:3", test_subset=60)


def test_first_subset_takes_the_first_k_samples_whatever_the_seed():
    full = load_dataset(SMALL, normalize=False)
    firsts = [
        load_dataset(SMALL, train_subset=10, subset="first", seed=s, normalize=False)
        for s in (0, 7)
    ]
    for ds in firsts:
        assert torch.equal(ds.x_train, full.x_train[:10])
        assert torch.equal(ds.y_train, full.y_train[:10])
    first_test = load_dataset(SMALL, test_subset=5, subset="first", normalize=False)
    assert torch.equal(first_test.x_test, full.x_test[:5])


def test_paper_label_noise_is_a_bernoulli_draw_from_seed_228_the_same_for_every_seed():
    clean = load_dataset(SMALL)
    a, b = (load_dataset(SMALL, label_noise=0.5, label_noise_style="paper", seed=s) for s in (1, 2))
    assert torch.equal(a.y_train, b.y_train) and torch.equal(a.noisy, b.noisy)
    rs = np.random.RandomState(228)  # the paper's draw: a mask, then a class per masked sample
    mask = rs.rand(60) <= 0.5
    expected = clean.y_train.numpy().copy()
    expected[mask] = rs.choice(4, mask.sum())
    assert a.noisy.numpy().tolist() == mask.tolist()
    assert a.y_train.numpy().tolist() == expected.tolist()
    kept = (a.y_train[a.noisy] == clean.y_train[a.noisy]).sum()
    assert kept > 0  # a redrawn class may be the true one (about 1 in 4 here)


def test_exact_label_noise_marks_exactly_the_changed_labels():
    clean = load_dataset(SMALL)
    noisy = load_dataset(SMALL, label_noise=0.25, seed=5)
    assert torch.equal(noisy.noisy, clean.y_train != noisy.y_train)
    assert load_dataset(SMALL).noisy is None


def test_paper_normalization_is_refused_for_non_rgb_samples():
    with pytest.raises(DataError, match="'paper'"):
        load_dataset(SMALL, normalize="paper")
    with pytest.raises(DataError, match="normalize"):
        load_dataset(SMALL, normalize="global")


def test_zero_padding_uses_the_per_channel_fill_and_the_zero_pixel_is_a_raw_zero():
    x = torch.rand(8, 3, 4, 4, dtype=torch.float64)
    fill = torch.tensor([-1.0, 2.0, 3.0], dtype=torch.float64).view(3, 1, 1)
    out = augment_images(x, torch.Generator().manual_seed(0), padding=2, mode="zeros", fill=fill)
    for image, augmented in zip(x, out, strict=True):
        padded = fill.expand(3, 8, 8).clone()
        padded[:, 2:6, 2:6] = image
        crops = [padded[:, dy : dy + 4, dx : dx + 4] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(augmented, c) or torch.equal(augmented, c.flip(-1)) for c in crops)
    ds = load_dataset("synthetic:3x4x4:20:5:3", dtype=torch.float64)
    raw = load_dataset("synthetic:3x4x4:20:5:3", dtype=torch.float64, normalize=False)
    mean = raw.x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = raw.x_train.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    assert ds.zero_pixel is not None
    assert torch.allclose(ds.zero_pixel, (-mean / std)[0], rtol=0, atol=1e-14)
