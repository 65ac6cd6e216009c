"""spherelab's data semantics and metrics equal the paper's code (float64).

The reference numbers in tests/fixtures/parity/data_metrics.json were made by running the
paper's public code (results/scripts/parity_data_metrics.py, which documents what exactly it
runs). Every test checks spherelab against them; where the paper's code is present (its default
checkout, or $SPHERELAB_OFFICIAL), `test_official_code_still_gives_the_fixture` reruns it live
and the metric checks evaluate the official network itself with spherelab's metric code.
Tolerances: 1e-12 relative for one pass over the data, 1e-9 for traces and eigenvalues (sums
of double-backward products over batches).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from spherelab import Config, apply_overrides
from spherelab.data import Dataset, image_augment, load_dataset
from spherelab.data.transforms import PAPER_MEAN, PAPER_STD
from spherelab.metrics import fisher_topk, fisher_trace, hvp, mean_rayleigh_quotient
from spherelab.models import build_model
from spherelab.sphere import si_parameters
from spherelab.train.build import eval_batches, label_noise_subsets
from spherelab.train.losses import get_loss
from spherelab.train.recorder import Recorder

sys.path.insert(0, str(Path(__file__).parent))
from _official import OFFICIAL_DIR  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "parity" / "data_metrics.json"
OFFICIAL = Path(os.environ.get("SPHERELAB_OFFICIAL", OFFICIAL_DIR))
HAVE_OFFICIAL = (OFFICIAL / "train.py").is_file()
ONE_PASS, SUMMED = 1e-12, 1e-9


def _script() -> Any:
    path = ROOT / "results" / "scripts" / "parity_data_metrics.py"
    spec = importlib.util.spec_from_file_location("parity_data_metrics", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


S = _script()


@pytest.fixture(scope="module")
def ref() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny float64 tensors: threads only add overhead here
    yield
    torch.set_num_threads(threads)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(1.0, abs(b))


# ------------------------------------------------------------------------------------ data


def _cifar_npz(tmp_path: Path, classes: int) -> str:
    """The stand-in CIFAR the script feeds the official loaders, in spherelab's npz format."""
    x_train, y_train = S.raw_cifar(S.N_RAW, seed=4)
    x_test, y_test = S.raw_cifar(S.N_RAW, seed=6)
    path = tmp_path / "cifar.npz"
    np.savez(
        path,
        x_train=x_train.transpose(0, 3, 1, 2),
        y_train=y_train,
        x_test=x_test.transpose(0, 3, 1, 2),
        y_test=y_test,
        num_classes=classes,
    )
    return f"npz:{path}"


def _paper_data(tmp_path: Path, ref: dict[str, Any], normalize: str) -> Dataset:
    return load_dataset(
        _cifar_npz(tmp_path, ref["data"]["num_classes"]),
        dtype=torch.float64,
        train_subset=S.K_FIRST,
        subset="first",
        label_noise=S.P_NOISE,
        label_noise_style="paper",
        normalize=normalize,
        seed=123,  # the paper's noise and first-k subset do not depend on the run seed
    )


def test_first_k_subset_and_label_noise_equal_the_official_loaders(tmp_path, ref):
    ds = _paper_data(tmp_path, ref, "none")
    assert ds.y_train.tolist() == ref["data"]["labels"]
    assert ds.noisy is not None
    assert torch.nonzero(ds.noisy).view(-1).tolist() == ref["data"]["corrupt_ids"]
    assert torch.nonzero(~ds.noisy).view(-1).tolist() == ref["data"]["normal_ids"]
    pixels = (ds.x_train * 255).round().to(torch.int64)
    assert int(pixels.sum()) == ref["data"]["first_k_images_sum"]


def test_paper_normalization_equals_the_official_constants_and_transform(tmp_path, ref):
    t = ref["transforms"]
    assert (list(PAPER_MEAN), list(PAPER_STD)) == (t["normalize_mean"], t["normalize_std"])
    ds = _paper_data(tmp_path, ref, "paper")
    raw = S.raw_cifar(S.N_RAW, seed=4)[0][: S.K_FIRST].astype(np.float64)
    expected = (raw / 255.0 - np.array(t["normalize_mean"])) / np.array(t["normalize_std"])
    got = ds.x_train.numpy().transpose(0, 2, 3, 1)
    assert np.abs(got - expected).max() <= ONE_PASS
    zero = (0.0 - np.array(t["normalize_mean"])) / np.array(t["normalize_std"])
    assert ds.zero_pixel is not None
    assert np.abs(ds.zero_pixel.view(-1).numpy() - zero).max() <= ONE_PASS


def test_zero_pad_crop_equals_the_official_crop_of_the_zero_padded_raw_image(tmp_path, ref):
    """The official crop pads the RAW image with 0 (torchvision's default fill) before
    normalizing; spherelab crops the normalized image padded with its `zero_pixel`. Each
    augmented image must equal the reference at one of the (2p+1)^2 offsets, flipped or not."""
    t = ref["transforms"]
    pad, size = t["crop_padding"], t["crop_size"]
    ds = _paper_data(tmp_path, ref, "paper")
    x = ds.x_train[:12]
    out = image_augment("zeros", ds.zero_pixel)(x, torch.Generator().manual_seed(0)).numpy()
    raw = S.raw_cifar(S.N_RAW, seed=4)[0][:12].astype(np.float64)
    padded = np.pad(raw, ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # zeros, as the official
    mean, std = np.array(t["normalize_mean"]), np.array(t["normalize_std"])
    worst, off_centre = 0.0, 0
    for k in range(len(raw)):
        best, where = np.inf, (pad, pad)
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                crop = (padded[k, dy : dy + size, dx : dx + size] / 255.0 - mean) / std
                crop = crop.transpose(2, 0, 1)
                for flip in (crop, crop[:, :, ::-1]):
                    diff = np.abs(out[k] - flip).max()
                    if diff < best:
                        best, where = diff, (dy, dx)
        worst = max(worst, best)
        off_centre += where != (pad, pad)
    assert worst <= ONE_PASS
    assert off_centre >= 6  # the padding itself was compared, not only centred crops


# --------------------------------------------------------------------------------- metrics


class _Single:
    """The recorder's view of one plain model (train.sharing.Solo without an optimizer)."""

    members = 1

    def train_inputs(self, x: Tensor) -> Tensor:
        return x

    def eval_inputs(self, x: Tensor) -> Tensor:
        return x

    def logits(self, out: Tensor) -> Tensor:
        return out.unsqueeze(0)


def _spherelab_convnet(state: dict[str, Tensor]) -> tuple[nn.Module, list[Tensor]]:
    """spherelab's convnet_si of width 2 carrying the official state (its head bias is 0)."""
    model = build_model("convnet_si", width=S.WIDTH).double()
    mine = model.state_dict()
    theirs = [v for k, v in state.items() if k != "linear_layers.2.bias"]
    assert not state["linear_layers.2.bias"].any()
    keys = list(mine)  # the same order of layers; a head bias of spherelab's, if any, is last
    loaded = dict(zip(keys, theirs)) | {k: torch.zeros_like(mine[k]) for k in keys[len(theirs) :]}
    assert all(k.endswith("bias") for k in keys[len(theirs) :])
    model.load_state_dict(loaded)
    return model, list(si_parameters(model))


def _official_convnet(state: dict[str, Tensor]) -> tuple[nn.Module, list[Tensor]]:
    model = S.official_model(S.official_modules(OFFICIAL), state)
    names = S.si_names()
    return model, [p for n, p in model.named_parameters() if n in names]


def _networks() -> list[str]:
    return ["spherelab", "official"] if HAVE_OFFICIAL else ["spherelab"]


def _measure(kind: str, key: str) -> dict[str, Any]:
    """spherelab's metric code on the network `kind` at the fixture's state `key`."""
    inputs = S.make_inputs()
    build = _official_convnet if kind == "official" else _spherelab_convnet
    model, si = build(inputs["states"]["start"])
    names = [f"si{i}" for i in range(len(si))]
    cfg = apply_overrides(Config(), {"train.eval_batch_size": S.BATCH})
    share = _Single()
    data = Dataset(
        "parity", inputs["x_train"], inputs["y_train"], inputs["x_test"], inputs["y_test"],
        S.CLASSES, noisy=inputs["noisy"],
    )  # fmt: skip
    train = eval_batches(data.x_train, data.y_train, cfg, share)
    test = eval_batches(data.x_test, data.y_test, cfg, share)
    recorder = Recorder(
        model, share, "cross_entropy", train, test, names, si,
        subsets=label_noise_subsets(data, cfg, share),
    )  # fmt: skip
    own = inputs["states"][key]
    if kind == "spherelab":
        model, si = _spherelab_convnet(own)  # the same parameters, now at `key`
        recorder.model.load_state_dict(model.state_dict())
    else:
        recorder.model.load_state_dict(own)
    out = {k: float(v[0]) for k, v in recorder.measure().items()}
    loss_fn = get_loss("cross_entropy")
    n = sum(p.numel() for p in si)
    probes = []
    for seed in S.PROBE_SEEDS:  # the official probe of each eval_trace call
        torch.manual_seed(seed)
        probes.append(torch.randn(n, dtype=torch.float64))
    shaped = [list(torch.split(v, [p.numel() for p in si])) for v in probes]
    shaped = [[t.view_as(p) for t, p in zip(v, si)] for v in shaped]
    si = recorder.si_params
    out["hess_trace"] = mean_rayleigh_quotient(
        lambda v: hvp(recorder.model, loss_fn, train, si, v), shaped
    )
    ftrace = fisher_trace(recorder.model, loss_fn, train, si, probes=shaped)
    out["fisher_trace"] = ftrace["trace_per_param"]
    return out


PAIRS = (  # spherelab record key -> official get_info.py key
    ("train_loss", "loss"),
    ("train_acc", "acc"),
    ("test_loss", "test_loss"),
    ("test_acc", "test_acc"),
    ("train_loss_noisy", "loss_corrupt"),
    ("train_acc_noisy", "acc_corrupt"),
    ("train_loss_clean", "loss_normal"),
    ("train_acc_clean", "acc_normal"),
    ("si_norm", "params_norm"),
    ("l2_to_init", "l2_init"),
)


@pytest.mark.parametrize("kind", _networks())
@pytest.mark.parametrize("key", ["start", "moved"])
def test_record_metrics_and_traces_equal_the_official_get_info(kind, key, ref):
    ours, theirs = _measure(kind, key), ref["metrics"][key]
    for mine, official in PAIRS:
        assert _rel(ours[mine], theirs[official]) <= ONE_PASS, (mine, ours[mine], theirs[official])
    paper_eff = theirs["gnorm_m"] * theirs["params_norm"]  # the paper's mean eff. grad norm
    assert _rel(ours["eff_grad_norm_plain"], paper_eff) <= ONE_PASS
    assert ours["eff_grad_norm"] != pytest.approx(paper_eff, rel=1e-6)  # batches 10, 10, 4
    assert _rel(ours["hess_trace"], float(np.mean(theirs["hess_trace"]))) <= SUMMED
    assert _rel(ours["fisher_trace"], float(np.mean(theirs["fisher_trace"]))) <= SUMMED


def test_fisher_lanczos_equals_the_official_eval_eigs_from_the_same_start(ref):
    expected = ref["metrics"]["moved"].get("fisher_evals")
    if expected is None:
        pytest.skip("the fixture was made without gpytorch: no official eval_eigs values")
    inputs = S.make_inputs()
    model, si = _spherelab_convnet(inputs["states"]["moved"])
    batches = [
        (inputs["x_train"][i : i + S.BATCH], inputs["y_train"][i : i + S.BATCH])
        for i in range(0, S.N_TRAIN, S.BATCH)
    ]
    gen = torch.Generator().manual_seed(S.LANCZOS_SEED)  # eval_eigs' start: torch.randn(N, 1)
    steps = S.LANCZOS_STEPS
    top = fisher_topk(model, get_loss("cross_entropy"), batches, si, steps, steps, gen)
    assert max(_rel(a, b) for a, b in zip(top.eigenvalues, expected)) <= SUMMED


def test_fisher_top_eigenvalues_equal_the_official_dense_fisher(ref):
    inputs = S.make_inputs()
    model, _ = _spherelab_convnet(inputs["states"]["moved"])
    conv0 = next(iter(si_parameters(model)))
    batches = [
        (inputs["x_train"][i : i + S.BATCH], inputs["y_train"][i : i + S.BATCH])
        for i in range(0, S.N_TRAIN, S.BATCH)
    ]
    loss_fn = get_loss("cross_entropy")
    top = fisher_topk(model, loss_fn, batches, [conv0], k=S.TOP_K, iters=conv0.numel())
    expected = ref["metrics"]["moved"]["fisher_top_eigenvalues_conv0"]
    assert max(_rel(a, b) for a, b in zip(top.eigenvalues, expected)) <= SUMMED


@pytest.mark.skipif(
    not HAVE_OFFICIAL,
    reason=f"the paper's code is not at {OFFICIAL} (set SPHERELAB_OFFICIAL): the live rerun is "
    "skipped; the fixture checks above still ran",
)
def test_official_code_still_gives_the_fixture(ref):
    live = S.official_reference(OFFICIAL, dense=False)
    assert live["transforms"] == ref["transforms"]
    assert live["data"] == ref["data"]
    for key, row in live["metrics"].items():
        for name, value in row.items():
            expected = ref["metrics"][key][name]
            values = value if isinstance(value, list) else [value]
            wanted = expected if isinstance(expected, list) else [expected]
            assert max(_rel(a, b) for a, b in zip(values, wanted)) <= SUMMED, name
