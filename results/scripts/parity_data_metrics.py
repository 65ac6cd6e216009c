"""Reference numbers for the data and metrics parity checks, computed by RUNNING the paper's code.

    python results/scripts/parity_data_metrics.py OFFICIAL_PATH [OUT_JSON]

OFFICIAL_PATH is a checkout of the paper's public code (train.py, data.py, nets/,
get_info_funcs.py); OUT_JSON defaults to tests/fixtures/parity/data_metrics.json. Everything
runs on a CPU in float64 (tests/_official.py stubs torchvision, tqdm and gpytorch and makes
`.cuda()` a no-op). What is computed by the official code:

- data: its `data.loaders` on a stand-in CIFAR-10 (seeded uint8 images, labels) with
  `use_data_size` (first k) and `corrupt_train` (label noise); the resulting training labels and
  the indices of the corrupted subset;
- the transform constants: the arguments its ConvNet-SI module passes to `Normalize` and
  `RandomCrop`, read by importing that module with recording stand-ins for torchvision's
  transforms (torchvision itself is not installed; its Normalize is (x - mean) / std, its
  RandomCrop pads with the constant 0 by default);
- metrics of its ConvNetSI (width 2) at two saved states (a seeded start, and a moved point with
  updated BN statistics) on seeded CIFAR-shaped data: `eval_model` (train set, BN train mode;
  test set, eval mode; the corrupted and the clean subsets), the SI parameter norm and the
  mean batch-gradient norm as get_info.py computes them (calc_grads over the SI parameters),
  get_info.py's `calc_l2` to the first state, `eval_trace` of the Hessian and of the Fisher with
  probes from fixed torch seeds, and the top Fisher eigenvalues of the first conv's weight from
  the dense matrix of the official Fisher-vector products;
- where gpytorch is importable (it is not a spherelab dependency; the fixture was made with
  gpytorch 1.15.2 installed beside the project with `pip install --target DIR --no-deps gpytorch
  linear_operator jaxtyping wadler_lindig mpmath` and DIR on PYTHONPATH): `eval_eigs` itself, 10
  Lanczos steps of the Fisher from a fixed torch seed. It calls `torch.symeig`, which current
  torch has removed; this script substitutes `torch.linalg.eigh` for that call (the same
  eigen-decomposition of the symmetric tridiagonal matrix).

The inputs (images, labels, states, probe seeds) are generated here without the official code
(`make_inputs`), so the test can rebuild them and compare spherelab's numbers with the fixture.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from _official import cuda_noop, is_stub, load_official  # noqa: E402  (tests/ holds the loader)

DEFAULT_OUT = ROOT / "tests" / "fixtures" / "parity" / "data_metrics.json"

# the data check: a stand-in CIFAR-10 of N_RAW images, the first K_FIRST of them, noise P_NOISE
N_RAW, K_FIRST, P_NOISE, CLASSES = 300, 240, 0.4, 10
# the metrics check: ConvNetSI of WIDTH on N_TRAIN / N_TEST CIFAR-shaped samples, batches of BATCH
WIDTH, N_TRAIN, N_TEST, BATCH, METRIC_NOISE = 2, 24, 12, 10, 0.3  # batches of 10, 10, 4
# torch.manual_seed before each official eval_trace call, with one probe each: its loop draws
# a probe, then iterates a DataLoader, which also consumes the global random state
PROBE_SEEDS = (11, 12)
N_PROBES = 1
TOP_K = 5
LANCZOS_SEED, LANCZOS_STEPS = 21, 10  # torch.manual_seed before eval_eigs; its nsteps default
CONV_SHAPES = ((2, 3, 3, 3), (4, 2, 3, 3), (8, 4, 3, 3), (16, 8, 3, 3))  # ConvNetSI width 2


def raw_cifar(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded uint8 images (N, 32, 32, 3), as CIFAR stores them, and labels."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, CLASSES, n)


def make_state(seed: int, moved: bool) -> dict[str, torch.Tensor]:
    """A ConvNetSI (width 2) state in the official order: conv weights with BN buffers, the head
    weight (norm 10) and a zero head bias. `moved`: running statistics as after training."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for i, shape in zip((0, 3, 7, 11), CONV_SHAPES):
        state[f"conv_layers.{i}.weight"] = torch.randn(shape, generator=gen, dtype=torch.float64)
        c = shape[0]
        mean = 0.3 * torch.randn(c, generator=gen, dtype=torch.float64) if moved else torch.zeros(c)
        var = 0.5 + torch.rand(c, generator=gen, dtype=torch.float64) if moved else torch.ones(c)
        state[f"conv_layers.{i + 1}.running_mean"] = mean.double()
        state[f"conv_layers.{i + 1}.running_var"] = var.double()
        state[f"conv_layers.{i + 1}.num_batches_tracked"] = torch.tensor(7 if moved else 0)
    head = torch.randn(CLASSES, 16, generator=gen, dtype=torch.float64)
    state["linear_layers.2.weight"] = 10.0 * head / head.norm()
    state["linear_layers.2.bias"] = torch.zeros(CLASSES, dtype=torch.float64)
    return state


def make_inputs() -> dict[str, Any]:
    """Everything both sides evaluate: normalized float64 data, noisy labels, the two states."""
    mean, std = np.array((0.4914, 0.4822, 0.4465)), np.array((0.2023, 0.1994, 0.2010))
    images, labels = raw_cifar(N_TRAIN + N_TEST, seed=5)
    x = (images.astype(np.float64) / 255.0 - mean) / std  # the paper's transform, in float64
    x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(labels.astype(np.int64))
    rs = np.random.RandomState(3)  # the metric check's own noise mask, independent of the data
    noisy = torch.from_numpy(rs.rand(N_TRAIN) <= METRIC_NOISE)
    y_train = y[:N_TRAIN].clone()
    y_train[noisy] = torch.from_numpy(rs.choice(CLASSES, int(noisy.sum())).astype(np.int64))
    start = make_state(1, moved=False)
    moved = make_state(2, moved=True)
    return {
        "x_train": x[:N_TRAIN],
        "y_train": y_train,
        "noisy": noisy,
        "x_test": x[N_TRAIN:],
        "y_test": y[N_TRAIN:],
        "states": {"start": start, "moved": moved},
    }


def si_names() -> list[str]:
    return [f"conv_layers.{i}.weight" for i in (0, 3, 7, 11)]


# --------------------------------------------------------------------------- official side


def official_modules(official: str | Path) -> dict[str, Any]:
    """The official modules (load_official's, plus `data`); the stand-in modules they needed
    are taken out of sys.modules again afterwards (the official modules keep their own
    references), so that later code inspecting sys.modules (inspect, torch) never meets them."""
    before = set(sys.modules)
    try:
        mods = dict(load_official(official))
        mods["data"] = importlib.import_module("data")
    finally:
        for name in set(sys.modules) - before:
            if is_stub(sys.modules[name]):
                del sys.modules[name]
    return mods


@contextlib.contextmanager
def patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


class _Recorded:
    """Stands in for a torchvision transform class and keeps the arguments it was built with."""

    def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.name, self.args, self.kwargs = name, args, kwargs


def transform_arguments(official: Path) -> dict[str, Any]:
    """The arguments the official ConvNet-SI module gives Normalize and RandomCrop, read by
    executing that module with recording stand-ins for torchvision.transforms."""
    recorded: list[_Recorded] = []

    def maker(name: str) -> Any:
        def build(*args: Any, **kwargs: Any) -> _Recorded:
            item = _Recorded(name, *args, **kwargs)
            recorded.append(item)
            return item

        return build

    transforms = types.ModuleType("torchvision.transforms")
    for name in ("Compose", "Resize", "RandomCrop", "RandomHorizontalFlip", "ToTensor"):
        setattr(transforms, name, maker(name))
    transforms.Normalize = maker("Normalize")  # type: ignore[attr-defined]
    vision = types.ModuleType("torchvision")
    vision.transforms = transforms  # type: ignore[attr-defined]
    spec = importlib.util.spec_from_file_location(
        "_official_convnet_si_transforms", official / "nets" / "convnet_si.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = {k: sys.modules.get(k) for k in ("torchvision", "torchvision.transforms")}
    sys.modules.update({"torchvision": vision, "torchvision.transforms": transforms})
    try:
        spec.loader.exec_module(module)
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    normalize = [r for r in recorded if r.name == "Normalize"]
    crop = [r for r in recorded if r.name == "RandomCrop"]
    assert len({(r.args, tuple(r.kwargs.items())) for r in normalize}) == 1
    return {
        "normalize_mean": list(normalize[0].args[0]),
        "normalize_std": list(normalize[0].args[1]),
        "crop_size": crop[0].args[0],
        "crop_padding": crop[0].kwargs["padding"],
    }


class _FakeCifar:
    """Stands in for torchvision.datasets.CIFAR10: the seeded raw images and labels."""

    def __init__(self, root: str, train: bool = True, **kwargs: Any) -> None:
        images, labels = raw_cifar(N_RAW, seed=4 if train else 6)
        self.data, self.targets, self.train = images, [int(v) for v in labels], train

    def __len__(self) -> int:
        return len(self.targets)


def official_data(mods: dict[str, Any]) -> dict[str, Any]:
    """Labels and corrupted indices from the official data.loaders (first k, label noise)."""
    data = mods["data"]
    stand_in = types.SimpleNamespace(datasets=types.SimpleNamespace(CIFAR10=_FakeCifar))
    with patched(data, "torchvision", stand_in), contextlib.redirect_stdout(sys.stderr):
        loaders, classes = data.loaders(
            "CIFAR10", "unused", BATCH, 0, None, None, use_validation=False,
            use_data_size=K_FIRST, corrupt_train=P_NOISE, shuffle_train=False,
            return_train_subsets=True,
        )  # fmt: skip
    train = loaders["train"].dataset
    return {
        "num_classes": int(classes),
        "first_k_images_sum": int(np.asarray(train.data, dtype=np.int64).sum()),
        "labels": [int(v) for v in train.targets],
        "corrupt_ids": [int(i) for i in loaders["train_corrupt"].dataset.indices],
        "normal_ids": [int(i) for i in loaders["train_normal"].dataset.indices],
    }


def official_model(mods: dict[str, Any], state: dict[str, torch.Tensor]) -> torch.nn.Module:
    torch.manual_seed(0)
    model = (
        mods["nets"]
        .ConvNetSI.base(num_classes=CLASSES, init_channels=WIDTH, max_depth=3, init_scale=10)
        .double()
    )
    model.load_state_dict(state)
    return model


def _loader(x: torch.Tensor, y: torch.Tensor, ids: Any = None) -> Any:
    dataset: Any = torch.utils.data.TensorDataset(x, y)
    if ids is not None:
        dataset = torch.utils.data.Subset(dataset, ids)
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=False)


def official_metrics(mods: dict[str, Any], inputs: dict[str, Any], dense: bool) -> dict[str, Any]:
    """get_info.py's metrics of both states, by the official functions."""
    gif, ce = mods["get_info_funcs"], mods["train"].cross_entropy
    train = _loader(inputs["x_train"], inputs["y_train"])
    test = _loader(inputs["x_test"], inputs["y_test"])
    mask = inputs["noisy"].numpy()
    corrupt = _loader(inputs["x_train"], inputs["y_train"], np.arange(len(mask))[mask])
    normal = _loader(inputs["x_train"], inputs["y_train"], np.arange(len(mask))[~mask])
    pnames = si_names()
    start = official_model(mods, inputs["states"]["start"])
    params_init = [p.clone() for _, p in start.named_parameters()]
    out: dict[str, Any] = {}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # their probes are drawn in the default dtype
    try:
        with cuda_noop():
            for key, state in inputs["states"].items():
                row: dict[str, Any] = {}
                # get_info.py --use_test is its own run on a freshly loaded checkpoint (a
                # train-mode pass updates the BN running statistics that eval mode reads)
                fresh = official_model(mods, state)
                row["test_loss"], row["test_acc"] = gif.eval_model(fresh, test, ce, False)
                model = official_model(mods, state)
                row["loss"], row["acc"] = gif.eval_model(model, train, ce, True)
                for name, loader in (("corrupt", corrupt), ("normal", normal)):
                    loss, acc = gif.eval_model(model, loader, ce, True)
                    row[f"loss_{name}"], row[f"acc_{name}"] = loss, acc
                with torch.no_grad():
                    si = [p for n, p in model.named_parameters() if n in pnames]
                    row["params_norm"] = float(np.sqrt(sum((p**2).sum().item() for p in si)))
                grads = gif.calc_grads(model, train, ce, True, pnames=pnames)
                norms = [np.sqrt(sum((t**2).sum().item() for t in g)) for g in grads]
                row["gnorm_m"] = float(np.array(norms).mean())
                with torch.no_grad():
                    row["l2_init"] = (
                        sum(
                            ((p1 - p2) ** 2).sum().item()
                            for p1, p2 in zip(params_init, [p for _, p in model.named_parameters()])
                        )
                        ** 0.5
                    )
                for fisher, prefix in ((False, "hess"), (True, "fisher")):
                    row[f"{prefix}_trace"] = []
                    for seed in PROBE_SEEDS:
                        torch.manual_seed(seed)
                        row[f"{prefix}_trace"].append(
                            gif.eval_trace(model, train, fisher, True, N_PROBES, pnames, ce)
                        )
                if dense:
                    row["fisher_top_eigenvalues_conv0"] = dense_fisher_top(gif, model, train)
                if has_gpytorch():
                    row["fisher_evals"] = lanczos_fisher(gif, model, train, pnames)
                out[key] = row
    finally:
        torch.set_default_dtype(previous)
    return out


def dense_fisher_top(gif: Any, model: torch.nn.Module, loader: Any) -> list[float]:
    """Top eigenvalues of the official Fisher of the first conv's weight, from its dense matrix
    (one official eval_mvp with Fvp per basis vector)."""
    param = dict(model.named_parameters())["conv_layers.0.weight"]
    n = param.numel()
    columns = []
    for i in range(n):
        basis = torch.zeros(n, dtype=param.dtype)
        basis[i] = 1.0
        (col,) = gif.eval_mvp(gif.Fvp, [basis.view_as(param)], [param], model, loader)
        columns.append(col.reshape(-1))
    dense = torch.stack(columns, dim=1)
    dense = (dense + dense.T) / 2  # symmetric up to rounding
    return torch.linalg.eigvalsh(dense).flip(0)[:TOP_K].tolist()


def has_gpytorch() -> bool:
    module = sys.modules.get("gpytorch")
    return module is not None and not is_stub(module)


def _symeig(matrix: torch.Tensor, eigenvectors: bool = False) -> Any:
    return torch.linalg.eigh(matrix)  # stands in for the removed torch.symeig


def lanczos_fisher(gif: Any, model: torch.nn.Module, loader: Any, pnames: list[str]) -> list[float]:
    """The official eval_eigs (Fisher, BN train mode): all Ritz values, largest first."""
    torch.manual_seed(LANCZOS_SEED)
    with patched(torch, "symeig", _symeig):
        evals, _ = gif.eval_eigs(model, loader, True, True, LANCZOS_STEPS, False, pnames)
    return sorted(evals.tolist(), reverse=True)


def official_reference(official: str | Path, dense: bool = True) -> dict[str, Any]:
    """Every reference number (the fixture's contents); `dense=False` leaves out the dense
    Fisher eigenvalues (the slow part, ~100 official Fisher-vector products)."""
    official = Path(official).resolve()
    mods = official_modules(official)
    inputs = make_inputs()
    return {
        "about": "made by results/scripts/parity_data_metrics.py from the paper's public code",
        "sizes": {
            "n_raw": N_RAW,
            "k_first": K_FIRST,
            "p_noise": P_NOISE,
            "width": WIDTH,
            "n_train": N_TRAIN,
            "n_test": N_TEST,
            "batch": BATCH,
            "probe_seeds": PROBE_SEEDS,
            "n_probes": N_PROBES,
        },  # fmt: skip
        "transforms": transform_arguments(official),
        "data": official_data(mods),
        "metrics": official_metrics(mods, inputs, dense),
    }


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    out = Path(argv[2]) if len(argv) == 3 else DEFAULT_OUT
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    ref = official_reference(argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(ref, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
