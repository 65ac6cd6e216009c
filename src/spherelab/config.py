"""Run configuration: frozen dataclasses, one override grammar (`section.key=value`), TOML/JSON I/O.

The same grammar serves the CLI (`--set optim.elr=1e-3`), TOML files (tables [model], [data],
[optim], [train]) and sweeps (an axis is a dotted key with a list of values).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A bad configuration value or file; the message names the value and the fix."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp_si"  # a name from spherelab.models.available_models()
    width: int | None = None  # channels (conv) or hidden units (mlp); None = family default
    depth: int | None = None  # conv stages / hidden layers; None = family default
    head_seed: int = 0  # seed of the frozen head: the same head in every run of a sweep
    head_norm: float = 10.0  # Frobenius norm of the frozen head (the paper: 10)
    # head bias: None = the variant's default (_si: none; _af: trainable); true on an _si model
    # adds a frozen bias drawn after the head weight from head_seed's generator (the paper's
    # ConvNet-SI); false removes it from an _af head (the paper's ResNet18SIAf)
    head_bias: bool | None = None
    depth_style: str = "stages"  # ConvNet depth: stages (conv+pool stages) | paper (--depth)
    # keyword arguments of a user factory (name = module:attr), e.g. --set model.kwargs.width=64
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist1d"  # mnist1d | fashion_mnist | cifar10 | cifar100 | synthetic | npz:PATH
    batch_size: int = 128  # samples per step; 0 = full-batch gradient descent
    train_subset: int | None = None  # use this many training samples (None = all)
    test_subset: int | None = None  # evaluate on this many test samples (None = all)
    subset: str = "random"  # random (seeded) | first (the first k samples, as the paper)
    label_noise: float = 0.0  # fraction of training labels made noisy (see label_noise_style)
    label_noise_style: str = "exact"  # exact (round(p n) labels, never the true class) | paper
    normalize: str = "split"  # split (train-split stats) | paper (fixed CIFAR constants) | none
    augment: bool = False  # random crop + flip on the device (off in the paper)
    augment_pad: str = "reflect"  # reflect | zeros (a raw zero pixel, as the paper's crop pads)
    data_dir: str | None = None  # where to look for files first
    download: bool = False  # fetch missing files (checksummed) when online


@dataclass(frozen=True)
class OptimConfig:
    mode: str = "sphere"  # sphere (fixed ELR, SphereSGD) | conventional (SGD + weight decay)
    elr: float = 1e-3  # effective learning rate on the unit sphere (sphere mode)
    sphere: str = "global"  # global | per_tensor | per_filter
    momentum: float = 0.0  # heavy-ball momentum (tangent-projected in sphere mode)
    momentum_style: str = "tangent"  # sphere mode: tangent (buffer projected) | paper (as is)
    lr: float = 0.1  # learning rate (conventional mode; trainable non-SI tensors in sphere mode)
    weight_decay: float = 0.0  # L2 weight decay (conventional mode; non-SI tensors in sphere mode)
    sphere_weight_decay: float = 0.0  # L2 decay of the SI tensors inside the sphere step
    elr_unit: str = "sphere"  # sphere (elr of each sphere) | paper (per_filter: elr x filters)
    others_lr: str = "own"  # non-SI tensors in sphere mode: own (optim.lr) | si (the SI lr)
    schedule: str = "constant"  # constant | piecewise | cosine | linear_decay | cosine_epoch
    schedule_milestones: tuple[float, ...] = ()  # piecewise: epochs where the factor changes
    schedule_factors: tuple[float, ...] = ()  # piecewise: factor after each milestone;
    # cosine: [floor factor]; linear_decay: [final factor] (the paper's --c_schedule p: [1/p])


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100  # training length in epochs (ignored when steps is set)
    steps: int | None = None  # training length in optimizer steps
    seed: int = 0  # init and batch order (the head has its own seed)
    init_from: str | None = None  # start from this checkpoint's weights (fine-tuning a branch)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | float64
    loss: str = "cross_entropy"  # cross_entropy | mse (squared loss on one-hot targets,
    # summed over classes) | mse_class_mean (the same averaged over classes: the paper's)
    ghost_batch: int = 0  # > 0: each step's batch in chunks of this many samples, each with
    # its own BatchNorm statistics (the paper's full-batch GD: data.batch_size=0, 128); 0 = off
    records: int = 25  # number of evaluation records (log-spaced epochs, plus 0 and last)
    record_schedule: str = "log"  # log | linear | epoch (every epoch; records unused)
    checkpoints: str = "log"  # log (at log-spaced epochs) | last | none
    eval_batch_size: int = 128  # fixed unshuffled batches for train/test metrics
    channels_last: bool = False  # memory format for conv models
    compile: bool = False  # torch.compile the model
    diagnose: str = ""  # online diagnostics at records: comma list of grad,angles,curvature,fisher
    diagnose_every: int = 1  # ... at every N-th (log-spaced) record
    # the same numbers inline, in any sweep and on any executor (same machine and versions):
    # one CPU thread, deterministic kernels, never packed (see README, Determinism)
    deterministic: bool = False
    log: str = ""  # "" | tensorboard: records also as TensorBoard scalars in RUN/tensorboard/


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        return apply_overrides(self, overrides)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig}


def parse_value(text: str) -> Any:
    """Parse a value as TOML would (numbers, booleans, lists, quoted strings); else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignment(text: str) -> tuple[str, Any]:
    """`optim.elr=1e-3` -> ("optim.elr", 0.001)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"override {text!r} is not of the form section.key=value (e.g. optim.elr=1e-3)"
        )
    return key.strip(), parse_value(value.strip())


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _coerce(dotted: str, value: Any, annotation: str) -> Any:
    """Check a value against the field's annotation string (e.g. 'int | None')."""
    if value is None and "None" in annotation:
        return None
    if annotation.startswith("dict"):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{dotted}={value!r} should be a table, e.g. {dotted}={{width=64}}")
        return dict(value)
    if annotation.startswith("tuple"):
        values = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_coerce(dotted, v, "float") for v in values)
    base = _TYPES[annotation.split(" | ")[0]]
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not base:
        raise ConfigError(f"{dotted}={value!r} should be {annotation}, got {type(value).__name__}")
    return value


def apply_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """Return a copy of cfg with dotted keys replaced; unknown keys name the valid ones."""
    sections = {name: getattr(cfg, name) for name in SECTIONS}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS:
            raise ConfigError(
                f"unknown config section {section!r} in {dotted!r}; use one of {sorted(SECTIONS)}"
            )
        fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
        name, dot, sub = key.partition(".")
        if dot and name in fields and str(fields[name].type).startswith("dict"):
            # one entry of a table field: model.kwargs.width=64
            table = {**getattr(sections[section], name), sub: value}
            sections[section] = dataclasses.replace(sections[section], **{name: table})
            continue
        if key not in fields:
            raise ConfigError(
                f"unknown key {dotted!r}; valid keys of [{section}]: {', '.join(sorted(fields))}"
            )
        value = _coerce(dotted, value, str(fields[key].type))
        sections[section] = dataclasses.replace(sections[section], **{key: value})
    return Config(**sections)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables -> dotted keys (`{"optim": {"elr": 1}}` -> `{"optim.elr": 1}`)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


# Top-level keys a run directory's config.json holds besides the config (spherelab writes them).
RUN_FILE_KEYS = ("environment", "official")  # official: runs made by import-official


def from_dict(data: Mapping[str, Any], allow: tuple[str, ...] = RUN_FILE_KEYS) -> Config:
    """Build a Config from a nested dict (as in config.json). Top-level keys in `allow` are
    ignored; any other key that is no section is a ConfigError, as is any unknown key inside a
    section: a misspelled table must never train with the defaults."""
    unknown = sorted(k for k in data if k not in SECTIONS and k not in allow)
    if unknown:
        raise ConfigError(
            f"unknown config table or key {unknown[0]!r}; use the tables "
            + ", ".join(f"[{s}]" for s in SECTIONS)
            + " (e.g. [optim] elr = 1e-3)"
        )
    known = {k: v for k, v in data.items() if k in SECTIONS}
    return apply_overrides(Config(), flatten(known))


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file into a dict, with a one-line error for a missing or broken file."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; check the path") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML ({err}); fix the file") from None


def load_config(path: str | Path) -> Config:
    """A run config from a TOML file with tables [model], [data], [optim], [train] (and
    nothing else: an unknown table or key is a ConfigError naming the file)."""
    return apply_overrides(Config(), file_overrides(path))


def load_json(path: str | Path) -> Config:
    """The Config of a config.json as a run directory holds it (RUN_FILE_KEYS are ignored)."""
    return from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# Presets: a named base of overrides under a config file, flags and --set (`--preset NAME`).
# "paper" is the paper's run script: ConvNet-SI width 32 on CIFAR-10 at seed 1, the frozen head
# drawn from seed 228 with norm 10, fixed normalization constants, no augmentation, batch 128,
# 1000 epochs, a record (and with train.checkpoints=log a checkpoint) at every epoch, and the
# paper's conventions wherever spherelab has an option for them (docs/paper_parity.md).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "model.name": "convnet_si",
        "model.width": 32,
        "model.depth": 3,
        "model.depth_style": "paper",
        "model.head_seed": 228,
        "model.head_norm": 10.0,
        "data.name": "cifar10",
        "data.batch_size": 128,
        "data.subset": "first",
        "data.label_noise_style": "paper",
        "data.normalize": "paper",
        "data.augment": False,
        "data.augment_pad": "zeros",
        "optim.momentum_style": "paper",
        "optim.elr_unit": "paper",
        "train.seed": 1,
        "train.epochs": 1000,
        "train.record_schedule": "epoch",
    },
}
# The ELR grid a preset gives a sweep without --elrs ("paper": Figure 1's).
PRESET_ELRS: dict[str, tuple[float, ...]] = {
    "paper": (1e-5, 1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 5e-2, 1e-1),
}


def preset_overrides(name: str) -> dict[str, Any]:
    """The dotted overrides of preset `name` (a ConfigError naming the valid ones)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid: {', '.join(sorted(PRESETS))}")
    return dict(PRESETS[name])


def preset_head_bias(name: str, model: str) -> bool | None:
    """The head bias preset `name` gives `model`: the paper's ConvNets carry a frozen bias
    (ConvNetSI, ConvNetSIAf), its ResNets none; other models keep their default (None)."""
    if name != "paper":
        return None
    if model.startswith("convnet"):
        return True
    return False if model.startswith("resnet") else None


def file_overrides(path: str | Path) -> dict[str, Any]:
    """The dotted keys a TOML config file sets; an unknown table or key is a ConfigError
    naming the file."""
    data = load_toml(path)
    try:
        from_dict(data, allow=())
    except ConfigError as err:
        raise ConfigError(f"config file {path}: {err}") from None
    return flatten(data)


def layered_config(
    preset: str | None, path: str | Path | None, overrides: Mapping[str, Any]
) -> Config:
    """A preset (if any), then a TOML file (if any), then `overrides` (flags and --set) on top.
    A preset's model-dependent keys (the head bias) follow the final model unless set."""
    layers = preset_overrides(preset) if preset else {}
    given = {**(file_overrides(path) if path else {}), **overrides}
    cfg = apply_overrides(Config(), {**layers, **given})
    if preset and "model.head_bias" not in given:
        cfg = apply_overrides(cfg, {"model.head_bias": preset_head_bias(preset, cfg.model.name)})
    return cfg
