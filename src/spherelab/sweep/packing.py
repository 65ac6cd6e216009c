"""Which runs of a sweep train together: the packing policy (where packing pays, how many runs
per module) and training one pack, with a one-by-one fallback so nothing is lost."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence

from spherelab.config import Config
from spherelab.ensemble.pack import can_pack, pack_key
from spherelab.runtime import resolve_device
from spherelab.sweep.tasks import Outcome, Runner, Task, execute, one_line_error

log = logging.getLogger("spherelab")

AUTO = "auto"  # pack where it pays (packing_pays), up to AUTO_PACK runs per module
AUTO_PACK = 16


def packing_pays(cfg: Config) -> bool:
    """Whether packing this kind of run is faster than running it alone (BENCHMARKS.md): on
    CUDA for every family; on a CPU only for MLPs, whose small steps are overhead and memory
    bound (an 8-member mlp_si pack is 1.6-4.9x faster than 8 single runs there), while grouped
    convolutions cost more per member than a single run's convolutions."""
    try:
        on_cuda = resolve_device(cfg.train.device).type == "cuda"
    except ValueError:  # a bad device: the run itself reports it
        return False
    return on_cuda or cfg.model.name == "mlp_si"


def pack_groups(tasks: Sequence[Task], pack: int | str, workers: int = 1) -> list[list[Task]]:
    """Chunks of at most `pack` tasks that can share one ensemble module (same
    spherelab.ensemble.pack_key: equal configs but for ELR and, where the data allow, seed);
    runs that cannot share one come alone. ``auto`` chunks up to AUTO_PACK runs, fewer where
    that leaves one of `workers` parallel workers idle; whether such a chunk then trains as one
    module is decided where it runs, from that machine's device (group_outcomes)."""
    size = pack
    if isinstance(size, str):  # AUTO (make_settings checked it)
        packable = sum(pack_key(t.config)[0] != "single" for t in tasks)
        size = min(AUTO_PACK, max(1, math.ceil(packable / max(1, workers))))
    if size <= 1:
        return [[task] for task in tasks]
    groups: dict[tuple, list[Task]] = {}
    for task in tasks:
        groups.setdefault(pack_key(task.config), []).append(task)
    unpackable = [task for key, group in groups.items() if key[0] == "single" for task in group]
    if len(unpackable) > 1:  # said once per sweep round, not once per run
        log.warning(
            "%d runs (model %s) cannot share one ensemble module (packing needs sphere mode, "
            "the global sphere and a zoo *_si model); training them one by one",
            len(unpackable),
            ", ".join(sorted({t.config.model.name for t in unpackable})),
        )
    packs = [g for key, g in groups.items() if key[0] != "single"]
    return [g[i : i + size] for g in packs for i in range(0, len(g), size)] + [
        [t] for t in unpackable
    ]


def group_outcomes(group: Sequence[Task], runner: Runner, pack: int | str) -> Iterator[Outcome]:
    """Train one chunk of pack_groups where it runs (a worker's unit of work). With ``auto`` the
    chunk trains as one module only where packing pays on THIS machine's device (the worker's,
    not the submitting machine's); else its runs train one by one."""
    if pack == AUTO and not packing_pays(group[0].config):
        for task in group:
            yield execute(runner, task)
        return
    yield from run_pack(group, runner)


def run_pack(group: Sequence[Task], runner: Runner) -> Iterator[Outcome]:
    """Train a pack of compatible runs as ONE module when the runner can (it has `train_pack`,
    as the default EngineRunner does) and the configs can share a module; else one by one. If
    the pack itself fails, its runs are retried one by one, so nothing is lost."""
    train_pack = getattr(runner, "train_pack", None)
    if len(group) > 1 and train_pack is not None:
        if can_pack([t.config for t in group]):
            start = time.perf_counter()
            try:
                summaries = train_pack([t.config for t in group], [t.run_dir for t in group])
            except Exception as err:  # noqa: BLE001 - fall back, and say why
                log.warning(
                    "ensemble of %d runs failed (%s); running them one by one",
                    len(group),
                    one_line_error(err),
                )
            else:
                seconds = (time.perf_counter() - start) / len(group)
                for task, summary in zip(group, summaries):
                    yield Outcome(task.run_dir, dict(summary), None, seconds)
                return
    for task in group:
        yield execute(runner, task)
