"""ELR sweeps: the grid spec, its expansion into runs, running/resuming/refining, summary.csv.

A sweep directory holds sweep.json (the spec and any refined ELRs), runs/<name>/ (one run per
point) and summary.csv (one row per run). Run directory names are for people only: the values
live in each config.json and in the summary columns, and nothing parses a name back.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spherelab.config import (
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    apply_overrides,
    flatten,
    from_dict,
    load_toml,
)
from spherelab.executors import (
    Outcome,
    Runner,
    Settings,
    Task,
    make_settings,
    one_line_error,
    run_tasks,
)

log = logging.getLogger("spherelab")

FINAL_STATUSES = ("finished", "nonfinite")
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "eff_grad_norm", "si_norm")
# Keys a sweep sets from its own fields; [set] and [axes] may not set them.
RESERVED = {"optim.elr": "elrs", "train.seed": "seeds", "model.name": "model",
            "data.name": "dataset", "train.epochs": "epochs"}
SPEC_KEYS = ("name", "model", "dataset", "elrs", "seeds", "epochs", "set", "axes")
SAME_ELR = 1e-6  # relative tolerance under which a refined ELR counts as already sampled


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, (list, tuple)) else value


def _check_elrs(elrs: Sequence[Any], source: str) -> tuple[float, ...]:
    if not elrs:
        raise ConfigError(f"{source}: the ELR list is empty; give at least one ELR > 0")
    for elr in elrs:
        if isinstance(elr, bool) or not isinstance(elr, (int, float)) or not 0 < elr < math.inf:
            raise ConfigError(f"{source}: ELR {elr!r} must be a finite number > 0")
    if len(set(elrs)) < len(elrs):
        raise ConfigError(f"{source}: ELR list {list(elrs)} repeats a value; list each once")
    return tuple(float(e) for e in elrs)


def parse_elrs(text: str) -> tuple[float, ...]:
    """`1e-4,1e-3` or `logspace:LO:HI:N` (N log-spaced values from LO to HI inclusive)."""
    text = text.strip()
    if text.startswith("logspace:"):
        parts = text.split(":")
        try:
            lo, hi, n = float(parts[1]), float(parts[2]), int(parts[3])
            if len(parts) != 4 or lo <= 0 or hi <= lo or n < 2:
                raise ValueError
        except (ValueError, IndexError):
            raise ConfigError(f"ELRs {text!r}: write logspace:LO:HI:N with 0 < LO < HI and "
                              "N >= 2, e.g. logspace:1e-4:1:8") from None
        step = (math.log10(hi) - math.log10(lo)) / (n - 1)
        # 12 digits drop float noise (1.0000000000000002e-3) so names and columns stay clean
        return _check_elrs([float(f"{10 ** (math.log10(lo) + i * step):.12g}")
                            for i in range(n)], text)
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"ELRs {text!r}: give a comma list of numbers (1e-4,1e-3) or "
                          "logspace:LO:HI:N") from None
    return _check_elrs(values, text)


def parse_seeds(text: str | int) -> tuple[int, ...]:
    """`0,1,2` -> (0, 1, 2); a single integer is one seed."""
    if isinstance(text, int):
        return (text,)
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"seeds {text!r}: give a comma list of integers, e.g. 0,1,2") from None


@dataclass(frozen=True)
class SweepSpec:
    elrs: tuple[float, ...]  # effective learning rates (unit sphere), each > 0
    model: str = ModelConfig.name
    dataset: str = DataConfig.name
    seeds: tuple[int, ...] = (0,)
    epochs: int | None = None  # None = the config default
    overrides: Mapping[str, Any] = field(default_factory=dict)  # dotted key -> value, every run
    axes: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # crossed with elrs x seeds
    name: str = "sweep"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "elrs", _check_elrs(list(self.elrs), "sweep"))
        seeds = list(self.seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
            raise ConfigError(f"seeds {seeds!r} must be a non-empty list of integers")
        if len(set(seeds)) < len(seeds):
            raise ConfigError(f"seeds {seeds!r} repeat a value; list each once")
        set_(self, "seeds", tuple(seeds))
        if self.epochs is not None and (isinstance(self.epochs, bool)
                                        or not isinstance(self.epochs, int) or self.epochs < 1):
            raise ConfigError(f"epochs={self.epochs!r} must be a positive integer")
        set_(self, "overrides", {k: _freeze(v) for k, v in self.overrides.items()})
        set_(self, "axes", {k: _freeze(v) for k, v in self.axes.items()})
        self._check_keys()

    def _check_keys(self) -> None:
        for key in itertools.chain(self.overrides, self.axes):
            if key in RESERVED:
                raise ConfigError(f"{key} is set by the sweep's {RESERVED[key]!r} field; "
                                  f"remove it from [set]/[axes] and use {RESERVED[key]}")
        for key, values in self.axes.items():
            if not isinstance(values, tuple) or not values:
                raise ConfigError(f"axis {key} = {values!r} must be a non-empty list of values")
            if len(set(map(repr, values))) < len(values):
                raise ConfigError(f"axis {key} = {list(values)} repeats a value; list each once")
            if key in self.overrides:
                raise ConfigError(f"{key} is both fixed ([set]) and an axis; keep one")

    def fixed_overrides(self) -> dict[str, Any]:
        epochs = {} if self.epochs is None else {"train.epochs": self.epochs}
        return {"model.name": self.model, "data.name": self.dataset, **epochs, **self.overrides}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "dataset": self.dataset,
                "elrs": list(self.elrs), "seeds": list(self.seeds), "epochs": self.epochs,
                "set": dict(self.overrides), "axes": {k: list(v) for k, v in self.axes.items()}}


def spec_from_dict(data: Mapping[str, Any], source: str = "sweep spec") -> SweepSpec:
    """A SweepSpec from a dict shaped like sweep.json or a spec TOML file."""
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}; "
                          f"valid fields: {', '.join(SPEC_KEYS)}")
    if "elrs" not in data:
        raise ConfigError(f"{source}: no elrs; add elrs = [1e-4, 1e-3] or \"logspace:1e-4:1:8\"")
    elrs = data["elrs"]
    seeds = data.get("seeds", (0,))
    fields = {k: data[k] for k in ("name", "model", "dataset", "epochs") if data.get(k) is not None}
    for key in ("set", "axes"):
        if not isinstance(data.get(key, {}), Mapping):
            raise ConfigError(f"{source}: {key} must be a table of dotted keys")
    return SweepSpec(
        elrs=parse_elrs(elrs) if isinstance(elrs, str) else _check_elrs(list(elrs), source),
        seeds=parse_seeds(seeds) if isinstance(seeds, (str, int)) else _freeze(seeds),
        overrides=flatten(data.get("set", {})), axes=flatten(data.get("axes", {})), **fields)


def load_spec(path: str | Path) -> SweepSpec:
    """Read a sweep spec TOML: name, model, dataset, elrs, seeds, epochs, [set], [axes]."""
    return spec_from_dict(load_toml(path), source=str(path))


@dataclass(frozen=True)
class Point:
    config: Config
    name: str  # run directory name under runs/ (readable, unique; never parsed)
    elr: float
    seed: int
    axes: Mapping[str, Any]  # this point's axis values

    @property
    def run_dir(self) -> str:
        return f"runs/{self.name}"


def _axes_key(axes: Mapping[str, Any]) -> str:
    return json.dumps(dict(axes), sort_keys=True)


def run_name(elr: float, seed: int, axes: Mapping[str, Any]) -> str:
    mantissa, _, exponent = f"{elr:.5e}".partition("e")
    name = f"elr_{mantissa.rstrip('0').rstrip('.')}e{exponent}__seed_{seed}"
    if axes:
        name += "__" + hashlib.sha1(_axes_key(axes).encode()).hexdigest()[:8]
    return name


def axis_combos(spec: SweepSpec) -> list[dict[str, Any]]:
    keys = list(spec.axes)
    return [dict(zip(keys, values)) for values in itertools.product(*spec.axes.values())]


def expand(spec: SweepSpec, refined: Sequence[Mapping[str, Any]] = ()) -> list[Point]:
    """Every point of the grid (axes x ELRs x seeds) plus refined ELRs, each config validated.

    refined: entries {"axes": {...}, "elr": x} added by refinement (run for every seed).
    """
    base = apply_overrides(Config(), spec.fixed_overrides())
    points = []
    for combo in axis_combos(spec):
        extra = [r["elr"] for r in refined if _axes_key(r["axes"]) == _axes_key(combo)]
        for elr in sorted(set(spec.elrs) | set(extra)):
            for seed in spec.seeds:
                cfg = apply_overrides(base, {**combo, "optim.elr": elr, "train.seed": seed})
                points.append(Point(cfg, run_name(elr, seed, combo), elr, seed, combo))
    names = Counter(p.name for p in points)
    clashes = [name for name, count in names.items() if count > 1]
    if clashes:
        raise ConfigError(f"ELRs too close to tell apart (run {clashes[0]}); make them differ "
                          "in the first 6 significant digits")
    return points


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _open_sweep_dir(spec: SweepSpec, out: Path) -> list[list[dict[str, Any]]]:
    """Check an existing sweep.json against spec (a rerun may only add points); its refinement
    rounds (each a list of {"axes", "elr"} entries)."""
    stored = _read_json(out / "sweep.json")
    if stored is None:
        if (out / "sweep.json").exists():
            raise ConfigError(f"{out / 'sweep.json'} is unreadable; use a new --out directory")
        return []
    old = spec_from_dict(stored["spec"], source=str(out / "sweep.json"))
    for key in ("model", "dataset", "epochs", "overrides"):
        if getattr(old, key) != getattr(spec, key):
            raise ConfigError(f"{out} holds a sweep with {key}={getattr(old, key)!r}, not "
                              f"{getattr(spec, key)!r}; use a new --out directory")
    if list(old.axes) != list(spec.axes):
        raise ConfigError(f"{out} holds a sweep with axes {list(old.axes)}, not "
                          f"{list(spec.axes)}; use a new --out directory")
    pairs = [("elrs", old.elrs, spec.elrs), ("seeds", old.seeds, spec.seeds)]
    for label, before, now in pairs + [(k, old.axes[k], spec.axes[k]) for k in old.axes]:
        dropped = [v for v in before if v not in now]
        if dropped:
            raise ConfigError(f"{out} already holds {label} {dropped} that this spec drops; a "
                              "rerun may only add points: keep them or use a new --out directory")
    return [list(round_) for round_ in stored.get("refined", [])]


def _write_sweep_json(out: Path, spec: SweepSpec, rounds: list[list[dict[str, Any]]]) -> None:
    payload = {"spec": spec.to_dict(), "refined": rounds}
    tmp = out / "sweep.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    tmp.replace(out / "sweep.json")


def _is_done(run_dir: Path, cfg: Config) -> bool:
    """A finished run of this very config (the device a worker picked does not count)."""
    summary, saved = _read_json(run_dir / "summary.json"), _read_json(run_dir / "config.json")
    if summary is None or saved is None or summary.get("status") not in FINAL_STATUSES:
        return False
    try:
        saved_cfg = from_dict(saved)
    except ConfigError:
        return False
    return apply_overrides(saved_cfg, {"train.device": cfg.train.device}) == cfg


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def summary_row(point: Point, summary: Mapping[str, Any] | None,
                error: str | None) -> dict[str, str]:
    """One summary.csv row (all cells as text, exactly as written)."""
    s = summary or {}
    row = {"elr": point.elr, "seed": point.seed, **point.axes, "regime": s.get("regime"),
           "status": s.get("status", "failed" if error else "unfinished"),
           **{m: s.get(m) for m in METRICS}, "epochs": s.get("epoch"),
           "run_dir": point.run_dir, "error": error}
    return {key: _cell(value) for key, value in row.items()}


def read_summary(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _write_summary(out: Path, rows: list[dict[str, str]]) -> Path:
    path, tmp = out / "summary.csv", out / "summary.csv.tmp"
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path


def boundaries_by_group(rows: Sequence[Mapping[str, str]],
                        axis_keys: Sequence[str]) -> dict[tuple[str, ...], list[Any]]:
    """Regime boundaries (spherelab.regimes.Boundary) per combination of the other axes."""
    from spherelab.regimes import estimate_boundaries  # lazy: written independently

    groups: dict[tuple[str, ...], list[Mapping[str, str]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in axis_keys), []).append(row)
    out = {}
    for key, group in groups.items():  # several seeds per ELR: regimes takes the majority
        done = [r for r in group if r["status"] in FINAL_STATUSES and r["regime"]]
        out[key] = list(estimate_boundaries([float(r["elr"]) for r in done],
                                            [r["regime"] for r in done]))
    return out


def _refine_points(spec: SweepSpec, points: Sequence[Point],
                   rows: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """New {"axes", "elr"} entries: geometric midpoints of every boundary interval."""
    from spherelab.regimes import refine_points  # lazy: written independently

    combos = {tuple(_cell(p.axes[k]) for k in spec.axes): p.axes for p in points}
    new = []
    for key, boundaries in boundaries_by_group(rows, list(spec.axes)).items():
        known = [p.elr for p in points if dict(p.axes) == dict(combos[key])]
        for elr in refine_points(boundaries):
            if not any(math.isclose(elr, k, rel_tol=SAME_ELR) for k in known):
                new.append({"axes": dict(combos[key]), "elr": float(elr)})
                known.append(float(elr))
    return new


class _Session:
    """One call of run_sweep: runs pending points, remembers outcomes, writes summary.csv."""

    def __init__(self, out: Path, runner: Runner, executor: str, settings: Settings,
                 progress: bool) -> None:
        self.out, self.runner, self.executor = out, runner, executor
        self.settings, self.progress = settings, progress
        self.outcomes: dict[str, Outcome] = {}

    def run(self, points: Sequence[Point]) -> None:
        pending = [p for p in points if not _is_done(self.out / p.run_dir, p.config)]
        if len(pending) < len(points):
            log.info("skipping %d finished runs", len(points) - len(pending))
        by_dir = {str(self.out / p.run_dir): p for p in pending}
        tasks = [Task(p.config, run_dir) for run_dir, p in by_dir.items()]
        done = itertools.count(1)

        def on_done(outcome: Outcome) -> None:
            self.outcomes[outcome.run_dir] = outcome
            point, s = by_dir[outcome.run_dir], outcome.summary or {}
            what = (f"{s.get('regime')} train_loss={_short(s.get('train_loss'))}"
                    if outcome.error is None else f"FAILED {outcome.error}")
            level = logging.INFO if self.progress else logging.DEBUG
            log.log(logging.WARNING if outcome.error else level,
                    "[%d/%d] elr=%.4g seed=%d %s-> %s (%.1f s)", next(done), len(tasks),
                    point.elr, point.seed, "".join(f"{k}={v} " for k, v in point.axes.items()),
                    what, outcome.seconds)

        run_tasks(self.executor, tasks, self.runner, on_done, self.settings)

    def rows(self, points: Sequence[Point]) -> list[dict[str, str]]:
        rows = []
        for p in points:
            outcome = self.outcomes.get(str(self.out / p.run_dir))
            if outcome is None:
                rows.append(summary_row(p, _read_json(self.out / p.run_dir / "summary.json"), None))
            else:
                rows.append(summary_row(p, outcome.summary, outcome.error))
        return rows


def _write_report(out: Path) -> None:
    try:
        from spherelab.report import write_report  # lazy: written independently

        log.info("report: %s", write_report(out))
    except Exception as err:  # a broken report must not lose a finished sweep
        log.warning("the report failed (%s); the sweep is complete, retry with "
                    "`spherelab report %s`", one_line_error(err), out)


def run_sweep(spec: SweepSpec, out_dir: str | Path, *, executor: str = "inline",
              workers: int = 2, refine: int = 0, runner: Runner | None = None,
              progress: bool = True, executor_options: Mapping[str, Any] | None = None,
              pack: int = 1, report: bool = True) -> Path:
    """Run (or resume, or extend) a sweep in out_dir; returns the path of summary.csv.

    executor: inline | local | submitit | ray (executor_options: see executors.OPTIONS);
    workers: parallel processes (local) or the default Slurm array throttle (submitit).
    refine: rounds of boundary refinement after the grid (new ELRs at the geometric midpoints
    of each boundary interval, for every seed); rounds already done in out_dir count.
    pack: runs per ensemble module (inline only; the hook is executors.run_pack).
    runner(config, run_dir) -> summary: defaults to executors.train_runner (spherelab.engine).
    Every input is validated before anything runs; a failing run is recorded, not raised.
    """
    from spherelab import executors  # looked up at call time so tests can swap the runner

    out = Path(out_dir).absolute()  # workers may run in another working directory
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ConfigError(f"refine={refine!r} must be an integer >= 0 (rounds of refinement)")
    settings = make_settings(executor, workers=workers, pack=pack, options=executor_options,
                             work_dir=out)
    if refine:  # fail now, not after the grid has run
        try:
            import spherelab.regimes  # noqa: F401
        except ImportError as err:
            raise ConfigError(f"refine={refine} needs spherelab.regimes ({err}); "
                              "run without --refine") from None
    rounds = _open_sweep_dir(spec, out)
    points = expand(spec, [entry for round_ in rounds for entry in round_])  # validates all
    out.mkdir(parents=True, exist_ok=True)
    _write_sweep_json(out, spec, rounds)
    session = _Session(out, runner or executors.train_runner, executor, settings, progress)
    session.run(points)
    path = _write_summary(out, session.rows(points))
    while len(rounds) < refine:  # rounds already in sweep.json count, so a rerun is a no-op
        new = _refine_points(spec, points, session.rows(points))
        if not new:
            log.info("refinement: no boundary interval left to split")
            break
        rounds.append(new)
        log.info("refinement round %d: %d new ELRs", len(rounds), len(new))
        points = expand(spec, [entry for round_ in rounds for entry in round_])
        _write_sweep_json(out, spec, rounds)
        session.run(points)
        path = _write_summary(out, session.rows(points))
    if report:
        _write_report(out)
    return path
