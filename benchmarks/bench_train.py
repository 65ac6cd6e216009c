"""Training speed of spherelab: s/epoch and throughput of single runs and K-member ensembles.

Measures the engine's own code paths (train.build.build_pack, then the loop's next_batch and
Stepper: a single run is the pack of one, an ensemble a pack of K) on these configs:
  * mlp_si on MNIST-1D (4000 training samples, batch 128: 32 steps per epoch), measured over
    whole epochs, plus end-to-end train_run x K vs train_ensemble (K members, 2 records);
  * convnet_si c=32 on synthetic CIFAR-shaped data (3x32x32, batch 128), measured over a few
    steps and EXTRAPOLATED to 391 steps per epoch (CIFAR-10's epoch), and the bare
    forward+backward of the same model on the same batch (target: step <= 1.15x bare).
Variants are interleaved within each repeat and the MEDIAN over repeats is reported. Peak
memory: CUDA max_memory_allocated, or on CPU the growth of the peak RSS (VmHWM) of a fresh
process while it builds the variant and runs one step.

    python benchmarks/bench_train.py --device cpu --repeats 3 [--quick]
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from spherelab.config import Config, apply_overrides
from spherelab.train import train_ensemble, train_run
from spherelab.train.build import Pack, build_pack
from spherelab.train.loop import Stepper, next_batch

CIFAR_STEPS = 391
ELRS = (1e-4, 3e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2, 1e-1)


def config(model: str, device: str, **over) -> Config:
    base = {
        "model.name": model,
        "data.batch_size": 128,
        "train.device": device,
        "train.records": 2,
        "train.checkpoints": "none",
        "train.epochs": 1,
    }
    if model == "mlp_si":
        base["data.name"] = "mnist1d"
    else:
        base |= {"data.name": "synthetic:3x32x32:1280:128", "model.width": 32}
    return apply_overrides(Config(), base | over)


def members(cfg: Config, k: int) -> list[Config]:
    return [
        cfg.with_overrides({"optim.elr": ELRS[i % len(ELRS)], "train.seed": i}) for i in range(k)
    ]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def pack_steps(cfgs: list[Config], layout: str | None = None):
    """n steps of a pack through the loop's own functions (the body of train.loop.run_loop)."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / str(k) for k in range(len(cfgs))]
        pack = build_pack(cfgs, outs, layout=layout)
    stepper = Stepper(pack, cuda_graph=False)
    x_all, y_all = pack.share.train_inputs(pack.data.x_train), pack.data.y_train

    def go(n: int) -> None:
        for _ in range(n):
            stepper(*next_batch(pack, x_all, y_all))

    return go, pack


def single_steps(cfg: Config):
    """n steps of one run: the pack of one."""
    return pack_steps([cfg])


def ensemble_steps(cfgs: list[Config], layout: str | None = None):
    return pack_steps(cfgs, layout)[0]


def bare_steps(pack: Pack, cfg: Config):
    """Forward+backward of the same model on one fixed batch: no data, optimizer or metrics."""
    x = pack.share.train_inputs(pack.data.x_train[: cfg.data.batch_size])
    y = pack.data.y_train[: cfg.data.batch_size]
    model = pack.share.model

    def go(n: int) -> None:
        for _ in range(n):
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()

    return go


def timed(fn, n: int, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn(n)
    sync(device)
    return time.perf_counter() - t0


def end_to_end(cfg: Config, k: int, epochs: int) -> tuple[float, float]:
    """Seconds for K sequential train_run calls and for one train_ensemble of K members."""
    cfgs = members(cfg.with_overrides({"train.epochs": epochs}), k)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for i, c in enumerate(cfgs):
            train_run(c, Path(tmp) / f"s{i}")
        t1 = time.perf_counter()
        train_ensemble(cfgs, [Path(tmp) / f"e{i}" for i in range(k)])
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def measure(args) -> dict[str, list[float]]:
    """Seconds per step (or per run for e2e_*) of every variant, one list entry per repeat."""
    mlp, conv = config("mlp_si", args.device), config("convnet_si", args.device)
    conv_cl = conv.with_overrides({"train.channels_last": True})
    ks = (1, 4, 8) if args.quick else (1, 4, 8, 16)
    conv_ks = (1, 4) if args.quick else tuple(int(k) for k in args.conv_k.split(","))
    mlp_steps, conv_steps = 32, (2 if args.quick else args.conv_steps)
    variants = {"mlp single": (single_steps(mlp)[0], mlp_steps)}
    variants |= {f"mlp ensemble K={k}": (ensemble_steps(members(mlp, k)), mlp_steps) for k in ks}
    variants["mlp ensemble K=8 channels layout"] = (
        ensemble_steps(members(mlp, 8), "channels"),
        mlp_steps,
    )
    for width in _widths(args.mlp_widths):  # target (a) against the MLP's width
        narrow = mlp.with_overrides({"model.width": width})
        variants[f"mlp w{width} single"] = (single_steps(narrow)[0], mlp_steps)
        variants[f"mlp w{width} ensemble K=8"] = (ensemble_steps(members(narrow, 8)), mlp_steps)
    conv_single, conv_run = single_steps(conv)
    variants |= {
        "convnet single": (conv_single, conv_steps),
        "convnet bare fwd+bwd": (bare_steps(conv_run, conv), conv_steps),
    }
    cl_single, cl_run = single_steps(conv_cl)
    variants |= {
        "convnet single channels_last": (cl_single, conv_steps),
        "convnet bare fwd+bwd channels_last": (bare_steps(cl_run, conv_cl), conv_steps),
    }
    variants |= {
        f"convnet ensemble K={k}": (ensemble_steps(members(conv, k)), max(1, conv_steps // k))
        for k in conv_ks
    }
    for fn, _ in variants.values():
        fn(1)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.repeats):
        for name, (fn, n) in variants.items():  # interleaved: each repeat runs every variant
            times[name].append(timed(fn, n, args.device) / n)
        if not args.quick or r == 0:
            seq, ens = end_to_end(mlp, 8, 2)
            times.setdefault("e2e mlp 8 x train_run (2 epochs)", []).append(seq)
            times.setdefault("e2e mlp train_ensemble K=8 (2 epochs)", []).append(ens)
        print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    return times


def _widths(text: str) -> list[int]:
    return [int(w) for w in text.split(",") if w.strip()]


def peak_memory(args, name: str) -> float:
    """Peak memory (MiB) of one step of a variant, in a fresh process (CPU) or on CUDA."""
    cmd = [sys.executable, __file__, "--device", args.device, "--memory-of", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _status_mib(key: str) -> float:
    """VmHWM / VmRSS of this process (MiB); unlike ru_maxrss, VmHWM restarts at exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_of(args) -> None:
    model, _, rest = args.memory_of.partition(" ")
    cfg = config("mlp_si" if model == "mlp" else "convnet_si", args.device)
    base = _status_mib("VmRSS")
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    k = int(rest.split("=")[1]) if "K=" in rest else 1
    fn = ensemble_steps(members(cfg, k)) if "ensemble" in rest else single_steps(cfg)[0]
    fn(1)
    if args.device.startswith("cuda"):
        print(torch.cuda.max_memory_allocated() / 2**20)
    else:
        print(_status_mib("VmHWM") - base)


def report(args, times: dict[str, list[float]]) -> None:
    med = {name: statistics.median(v) for name, v in times.items()}
    print(
        f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"repeats {args.repeats} (medians)"
    )
    print(f"{'variant':42s} {'s/step':>9s} {'s/epoch/run':>12s} {'samples/s':>10s} {'MiB':>8s}")
    for name, sec in med.items():
        if name.startswith("e2e"):
            print(f"{name:42s} {sec:9.2f} s total")
            continue
        k = int(re.search(r"K=(\d+)", name).group(1)) if "K=" in name else 1
        spe = 32 if name.startswith("mlp") else CIFAR_STEPS
        skip = "bare" in name or " w" in name or "layout" in name or args.no_memory
        mem = "" if skip else f"{peak_memory(args, name):8.0f}"
        print(f"{name:42s} {sec:9.4f} {sec * spe / k:12.3f} {128 * k / sec:10.0f} {mem}")
    print("convnet s/epoch: measured over a few steps, extrapolated to 391 steps/epoch")
    print(
        f"(a) mlp 8 single runs / ensemble K=8, steps: "
        f"{8 * med['mlp single'] / med['mlp ensemble K=8']:.2f}x (target >= 4)"
    )
    layouts = med["mlp ensemble K=8 channels layout"] / med["mlp ensemble K=8"]
    print(f"mlp K=8: features layout speed-up over the channels layout: {layouts:.2f}x")
    for width in _widths(args.mlp_widths):
        ratio = 8 * med[f"mlp w{width} single"] / med[f"mlp w{width} ensemble K=8"]
        print(f"(a) width {width}: 8 single runs / ensemble K=8, steps: {ratio:.2f}x")
    print(
        f"(a) mlp end-to-end 8 x train_run / train_ensemble: "
        f"{med['e2e mlp 8 x train_run (2 epochs)'] / med['e2e mlp train_ensemble K=8 (2 epochs)']:.2f}x"
    )
    for suffix in ("", " channels_last"):
        ratio = med[f"convnet single{suffix}"] / med[f"convnet bare fwd+bwd{suffix}"]
        print(f"(b) convnet single step / bare fwd+bwd{suffix}: {ratio:.3f}x (target <= 1.15)")
    print(
        f"channels_last speed-up of the convnet step: "
        f"{med['convnet single'] / med['convnet single channels_last']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer steps and variants")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--conv-steps", type=int, default=4, help="convnet steps per timing")
    parser.add_argument("--conv-k", default="1,4,8,16", help="convnet ensemble sizes")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    parser.add_argument(
        "--mlp-widths", default="32,64,100,128", help="extra MLP widths for target (a), or ''"
    )
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("spherelab").setLevel(logging.WARNING)
    if args.memory_of:
        memory_of(args)
        return
    report(args, measure(args))


if __name__ == "__main__":
    main()
