"""Throw random bad input at the `spherelab` command for a bounded time (`make fuzz`).

Every case runs the real command in a subprocess and must end the way a user error should:
exit status 2 with one `error:` line (status 0 is also allowed where the random input may happen
to be valid or a damaged file is recovered from), and never a Python traceback. Cases:

- `--set` with an unknown key, a value of the wrong type, or a number out of range;
- a TOML config with garbage, unknown tables or keys;
- an npz data file of random bytes or with non-finite values;
- a run directory whose files (config.json, metrics.jsonl, summary.json, checkpoints) are
  truncated or replaced by random bytes, then `train --resume`, `diagnose` and `report`;
- a sweep directory with a damaged summary.csv or run summary, then `report [--relabel]`;
- unknown flags and bad flag values.

    python tests/fuzz_cli.py --seconds 120 [--seed 0] [--keep DIR]

Failing cases are listed with their command and the tail of stderr, and the script exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from spherelab.config import SECTIONS

SPHERELAB = [sys.executable, "-m", "spherelab.cli"]
STEPS = ["--set", "train.steps=2", "--set", "train.records=2"]
TINY = [*STEPS, "--set", "data.train_subset=256", "--set", "data.test_subset=256"]
CASE_TIMEOUT = 90.0
# Free-form strings where any value may be valid.
FREE_KEYS = {"data.data_dir", "train.init_from"}
BAD_NUMBERS = ["-1", "0", "nan", "inf", "-inf", "1e308", "-1e-300", "99999999999", "-0.0"]
BAD_STRINGS = ["''", "'zzz'", "'../../etc'", "'\\u0000'", "[1, 2]", "{a = 1}", "true"]


@dataclasses.dataclass
class Case:
    name: str
    argv: list[str]
    allowed: tuple[int, ...] = (2,)


def config_keys() -> list[tuple[str, str]]:
    """(dotted key, annotation) of every run config field."""
    return [
        (f"{section}.{f.name}", str(f.type))
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
    ]


def random_bytes(rng: random.Random, n: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(n))


def damage(path: Path, rng: random.Random) -> str:
    """Truncate a file, or replace it with random bytes; returns what was done."""
    data = path.read_bytes()
    if rng.random() < 0.6 and len(data) > 1:
        path.write_bytes(data[: rng.randrange(len(data))])
        return f"truncated {path.name}"
    path.write_bytes(random_bytes(rng, rng.randrange(1, 200)))
    return f"random bytes in {path.name}"


class Fuzzer:
    def __init__(self, work: Path, rng: random.Random) -> None:
        self.work = work
        self.rng = rng
        self.count = 0
        self.seed_run = work / "seed_run"
        self.seed_sweep = work / "seed_sweep"

    def fresh(self, name: str) -> Path:
        self.count += 1
        return self.work / f"{self.count:04d}-{name}"

    def make_seeds(self) -> None:
        """One finished run with checkpoints and one two-run sweep, copied by each case."""
        ckpt = ["--set", "train.checkpoints=log", "--out"]
        for argv in (
            ["train", *TINY, *ckpt, str(self.seed_run)],
            ["sweep", "--elrs", "1e-3,1e-2", *TINY, "--out", str(self.seed_sweep)],
        ):
            done = subprocess.run([*SPHERELAB, *argv], capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"could not make the seed directories:\n{done.stderr}")

    # --- case generators -------------------------------------------------------------

    def bad_key(self) -> Case:
        section = self.rng.choice([*SECTIONS, "optm", "trian", "x"])
        key = self.rng.choice(["elrr", "epoch", "lr_", "seeds", "zz", ""])
        return Case("unknown key", ["train", *TINY, "--set", f"{section}.{key}=1"])

    def bad_value(self) -> Case:
        dotted, annotation = self.rng.choice([k for k in config_keys() if k[0] not in FREE_KEYS])
        if annotation.startswith(("int", "float", "tuple")):
            value = self.rng.choice(BAD_NUMBERS + BAD_STRINGS)
            allowed: tuple[int, ...] = (0, 2)  # some numbers are valid for some keys
        elif annotation.startswith("bool"):
            value, allowed = self.rng.choice(["'yes'", "2", "'1'", "[true]"]), (2,)
        else:
            value, allowed = self.rng.choice(BAD_STRINGS + BAD_NUMBERS), (0, 2)
        out = self.fresh("value")
        return Case(
            f"{dotted}={value}",
            ["train", *TINY, "--set", f"{dotted}={value}", "--out", str(out)],
            allowed,
        )

    def bad_toml(self) -> Case:
        path = self.fresh("config").with_suffix(".toml")
        texts = [
            "[optm]\nelr = 0.5\n",
            "[optim]\nelrr = 0.5\n",
            "elr = 0.5\n",
            "[optim\nelr = 0.5\n",
            "[model]\nname = 3\n",
            "[optim]\nelr = 'fast'\n",
            "[[optim]]\nelr = 1\n",
        ]
        if self.rng.random() < 0.3:
            path.write_bytes(random_bytes(self.rng, self.rng.randrange(1, 300)))
        else:
            path.write_text(self.rng.choice(texts))
        return Case(f"toml {path.name}", ["train", *TINY, "--config", str(path)])

    def bad_npz(self) -> Case:
        path = self.fresh("data").with_suffix(".npz")
        if self.rng.random() < 0.5:
            path.write_bytes(random_bytes(self.rng, self.rng.randrange(1, 500)))
            what = "random bytes"
        else:
            import numpy as np

            x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
            x[self.rng.randrange(64), self.rng.randrange(8)] = self.rng.choice(
                [float("nan"), float("inf")]
            )
            y = np.arange(64) % 2
            np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
            what = "non-finite feature"
        return Case(f"npz {what}", ["train", "--dataset", f"npz:{path}", *STEPS])

    def damaged_run(self) -> Case:
        run = self.fresh("run")
        shutil.copytree(self.seed_run, run)
        files = [p for p in run.rglob("*") if p.is_file() and p.stat().st_size > 0]
        what = damage(self.rng.choice(files), self.rng)
        argv = self.rng.choice(
            [
                ["train", *TINY, "--out", str(run), "--resume"],
                ["diagnose", str(run), "--what", "grad", "--samples", "64", "--probes", "1"],
                ["train", *TINY, "--out", str(run)],
            ]
        )
        return Case(f"{what}; {argv[0]}", argv, (0, 2))

    def damaged_sweep(self) -> Case:
        sweep = self.fresh("sweep")
        shutil.copytree(self.seed_sweep, sweep)
        files = [
            p
            for p in sweep.rglob("*")
            if p.is_file() and p.suffix in {".csv", ".json", ".jsonl"} and p.stat().st_size
        ]
        what = damage(self.rng.choice(files), self.rng)
        argv = ["report", str(sweep)] + (["--relabel"] if self.rng.random() < 0.5 else [])
        return Case(f"{what}; {' '.join(argv[:1] + argv[2:])}", argv, (0, 2))

    def bad_flags(self) -> Case:
        command = self.rng.choice(["train", "sweep", "report", "diagnose", "toy", "finetune"])
        flag = self.rng.choice(
            [
                ["--elr", "fast"],
                ["--epochs", "-3"],
                ["--batch-size", "-5"],
                ["--nonsense"],
                ["--out"],
                ["--elrs", "1e-3,,x"],
                ["--dtype", "float16"],
            ]
        )
        return Case(f"{command} {' '.join(flag)}", [command, *flag])

    GENERATORS: tuple[Callable[[Fuzzer], Case], ...] = (
        bad_key,
        bad_value,
        bad_toml,
        bad_npz,
        damaged_run,
        damaged_sweep,
        bad_flags,
    )

    def next_case(self) -> Case:
        return self.rng.choice(self.GENERATORS)(self)


def run_case(case: Case, cwd: Path) -> str | None:
    """None when the command behaved; else why not."""
    try:
        done = subprocess.run(
            [*SPHERELAB, *case.argv],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=CASE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return f"no answer in {CASE_TIMEOUT:.0f} s"
    if "Traceback (most recent call last)" in done.stderr:
        return "traceback:\n" + done.stderr[-1500:]
    if done.returncode not in case.allowed:
        return f"exit {done.returncode}, expected {case.allowed}:\n{done.stderr[-800:]}"
    if done.returncode == 2 and "error:" not in done.stderr:
        return f"exit 2 without an error line:\n{done.stderr[-800:]}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="keep the work directory here (default: a temp dir)")
    args = parser.parse_args(argv)
    work = Path(args.keep or tempfile.mkdtemp(prefix="spherelab-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    fuzzer = Fuzzer(work, random.Random(args.seed))
    fuzzer.make_seeds()
    start, failures, cases = time.monotonic(), [], 0
    while time.monotonic() - start < args.seconds:
        case = fuzzer.next_case()
        problem = run_case(case, work)
        cases += 1
        status = "ok" if problem is None else "FAIL"
        print(f"[{time.monotonic() - start:6.1f}s] {status:4} {case.name}", flush=True)
        if problem is not None:
            failures.append((case, problem))
    for case, problem in failures:
        print(f"\nFAIL {case.name}\n  spherelab {' '.join(case.argv)}\n  {problem}")
    print(
        json.dumps({"cases": cases, "failures": len(failures), "seconds": args.seconds}),
        flush=True,
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
