"""Sweep specs: the grid (ELRs x seeds x axes), its TOML form, and its expansion into run points.

Run directory names are for people only: the values live in each config.json and in the
summary columns, and nothing parses a name back.
"""

from __future__ import annotations

import hashlib
import itertools
import json
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
    load_toml,
)
from spherelab.train.validation import validate_config

# Keys a sweep sets from its own fields; [set] and [axes] may not set them.
RESERVED = {
    "optim.elr": "elrs",
    "train.seed": "seeds",
    "model.name": "model",
    "data.name": "dataset",
    "train.epochs": "epochs",
}
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
            raise ConfigError(
                f"ELRs {text!r}: write logspace:LO:HI:N with 0 < LO < HI and "
                "N >= 2, e.g. logspace:1e-4:1:8"
            ) from None
        step = (math.log10(hi) - math.log10(lo)) / (n - 1)
        # 12 digits drop float noise (1.0000000000000002e-3) so names and columns stay clean
        return _check_elrs(
            [float(f"{10 ** (math.log10(lo) + i * step):.12g}") for i in range(n)], text
        )
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"ELRs {text!r}: give a comma list of numbers (1e-4,1e-3) or logspace:LO:HI:N"
        ) from None
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
        if self.epochs is not None and (
            isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1
        ):
            raise ConfigError(f"epochs={self.epochs!r} must be a positive integer")
        set_(self, "overrides", {k: _freeze(v) for k, v in self.overrides.items()})
        set_(self, "axes", {k: _freeze(v) for k, v in self.axes.items()})
        self._check_keys()

    def _check_keys(self) -> None:
        for key in itertools.chain(self.overrides, self.axes):
            if key in RESERVED:
                raise ConfigError(
                    f"{key} is set by the sweep's {RESERVED[key]!r} field; "
                    f"remove it from [set]/[axes] and use {RESERVED[key]}"
                )
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
        return {
            "name": self.name,
            "model": self.model,
            "dataset": self.dataset,
            "elrs": list(self.elrs),
            "seeds": list(self.seeds),
            "epochs": self.epochs,
            "set": dict(self.overrides),
            "axes": {k: list(v) for k, v in self.axes.items()},
        }


def spec_from_dict(data: Mapping[str, Any], source: str = "sweep spec") -> SweepSpec:
    """A SweepSpec from a dict shaped like sweep.json or a spec TOML file."""
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(SPEC_KEYS)}"
        )
    if "elrs" not in data:
        raise ConfigError(f'{source}: no elrs; add elrs = [1e-4, 1e-3] or "logspace:1e-4:1:8"')
    elrs = data["elrs"]
    seeds = data.get("seeds", (0,))
    fields = {k: data[k] for k in ("name", "model", "dataset", "epochs") if data.get(k) is not None}
    for key in ("set", "axes"):
        if not isinstance(data.get(key, {}), Mapping):
            raise ConfigError(f"{source}: {key} must be a table of dotted keys")
    return SweepSpec(
        elrs=parse_elrs(elrs) if isinstance(elrs, str) else _check_elrs(list(elrs), source),
        seeds=parse_seeds(seeds) if isinstance(seeds, (str, int)) else _freeze(seeds),
        overrides=flatten(data.get("set", {})),
        axes=flatten(data.get("axes", {})),
        **fields,
    )


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
                cfg = validate_config(
                    apply_overrides(base, {**combo, "optim.elr": elr, "train.seed": seed})
                )
                points.append(Point(cfg, run_name(elr, seed, combo), elr, seed, combo))
    names = Counter(p.name for p in points)
    clashes = [name for name, count in names.items() if count > 1]
    if clashes:
        raise ConfigError(
            f"ELRs too close to tell apart (run {clashes[0]}); make them differ "
            "in the first 6 significant digits"
        )
    return points
