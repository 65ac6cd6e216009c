"""Cost of SI discovery's two tracers on the zoo: torch.fx (used when a one-input forward
traces) against torch.export (used for models with Python control flow, given an example).

Best of `--repeats` traces after one warm-up (the first export in a process also pays a
one-time start-up of a few seconds, reported separately). Batch of 8 CIFAR-shaped inputs.

    python benchmarks/bench_tracing.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from spherelab.models import build_model
from spherelab.sphere.tracing import trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(8, 3, 32, 32)
    start = time.perf_counter()
    trace(build_model("mlp_si", in_features=4), torch.randn(2, 4), method="export")  # start-up
    rows = [{"what": "first export in the process", "s": round(time.perf_counter() - start, 3)}]
    for name in ("convnet_si", "resnet18_si"):
        model = build_model(name)
        for method in ("fx", "export"):
            trace(model, x, method=method)  # warm-up
            best = min(trace(model, x, method=method).seconds for _ in range(args.repeats))
            rows.append({"model": name, "tracer": method, "s": round(best, 4)})
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
