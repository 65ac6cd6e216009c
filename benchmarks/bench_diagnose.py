"""Cost of the landscape diagnostics: a Hutchinson trace and a top-5 Lanczos estimate.

convnet_si (c=32) on 1,000 CIFAR-shaped images (synthetic data, fixed batches of 128, BN in
train mode), the SI weights at initialization. Reports wall time and the peak memory of each
measurement, run in a fresh process so the peaks do not mix (CPU: growth of the peak RSS,
VmHWM; CUDA: max_memory_allocated).

    python benchmarks/bench_diagnose.py [--device cpu] [--images 1000] [--probes 4] [--iters 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch


def _vm_hwm_mib() -> float:
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(what: str, device: str, images: int, probes: int, iters: int) -> dict[str, float]:
    """One measurement in this process: build, warm up nothing, time `what` once."""
    from spherelab.data.load import load_dataset
    from spherelab.metrics.curvature import hutchinson_trace, lanczos_topk
    from spherelab.models import build_model
    from spherelab.train.losses import cross_entropy

    torch.manual_seed(0)
    data = load_dataset(f"synthetic:3x32x32:{images}:10", device=device)
    model = build_model("convnet_si", width=32).to(device)
    batches = [
        (data.x_train[i : i + 128], data.y_train[i : i + 128]) for i in range(0, images, 128)
    ]
    params = model.si_parameters()
    gen = torch.Generator(device=device).manual_seed(0)
    base = _vm_hwm_mib() if device == "cpu" else 0.0
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if what == "trace":
        out = hutchinson_trace(
            model, cross_entropy, batches, params, n_probes=probes, generator=gen
        )
        value = out["effective_trace"]
    else:
        out = lanczos_topk(model, cross_entropy, batches, params, k=5, iters=iters, generator=gen)
        value = out.effective_eigenvalues[0]
    seconds = time.perf_counter() - start
    if device == "cpu":
        peak = _vm_hwm_mib() - base
    else:
        peak = torch.cuda.max_memory_allocated() / 2**20
    return {"seconds": seconds, "peak_mib": peak, "value": value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=4, help="Hutchinson probes")
    parser.add_argument("--iters", type=int, default=10, help="Lanczos iterations (>= 5)")
    parser.add_argument("--one", choices=["trace", "top5"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.device, args.images, args.probes, args.iters)))
        return
    print(
        f"convnet_si c=32, {args.images} images, device {args.device}, "
        f"threads {torch.get_num_threads()}, torch {torch.__version__}"
    )
    for what, label in (
        ("trace", f"Hutchinson trace, {args.probes} probes"),
        ("top5", f"top-5 Lanczos, {args.iters} iterations"),
    ):
        cmd = [
            sys.executable,
            __file__,
            "--one",
            what,
            "--device",
            args.device,
            "--images",
            str(args.images),
            "--probes",
            str(args.probes),
            "--iters",
            str(args.iters),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{label:34s} {row['seconds']:8.1f} s  peak +{row['peak_mib']:7.0f} MiB  "
            f"(effective value {row['value']:.4g})"
        )


if __name__ == "__main__":
    main()
