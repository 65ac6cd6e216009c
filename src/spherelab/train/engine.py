"""Train runs: `train_run` (one run) and `train_ensemble` (K runs in one module) are the same
engine; a single run is the pack of one. Each run's directory follows docs/run_files.md.

An interrupted run or pack resumes from its checkpoints; a finished one returns its summary
without training again. A member whose loss goes non-finite is finished as `nonfinite` (label
divergence) while the others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spherelab.config import Config
from spherelab.lock import hold_all
from spherelab.runtime import deterministic_mode, resolve_device
from spherelab.train import run_files
from spherelab.train.build import build_pack, check_packable
from spherelab.train.loop import ProgressFn, RecordHook, StopFn, run_loop

log = logging.getLogger("spherelab")


def train_run(
    cfg: Config,
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool | ProgressFn = False,
    hooks: Sequence[RecordHook] = (),
) -> dict[str, Any]:
    """Train (or resume, or return the finished result of) one run in `out_dir`.

    `hooks` are called at every record (see train.loop.RecordEvent); `train.diagnose` needs
    the hooks of spherelab.diagnose.hooks_for(cfg)."""
    return train_ensemble([cfg], [out_dir], resume=resume, progress=progress, hooks=hooks)[0]


def train_ensemble(
    cfgs: Sequence[Config],
    out_dirs: Sequence[str | Path],
    *,
    resume: bool = True,
    progress: bool | ProgressFn = False,
    hooks: Sequence[RecordHook] = (),
    shared_batches: bool = False,
    cuda_graph: bool = False,
    layout: str | None = None,
    stop: StopFn | None = None,
) -> list[dict[str, Any]]:
    """Train (or resume, or return the finished results of) K runs, one directory each; one
    summary per config, in order.

    K > 1 configs must be packable (spherelab.ensemble.can_pack: sphere mode, global sphere, a
    *_si model, equal but for optim.elr and train.seed) and train as ONE module; every member
    writes exactly its single run's files. By default each member draws its own batch order
    from its own seed, exactly like its single run; `shared_batches` feeds all members member
    0's order. `cuda_graph` replays the whole step as one CUDA graph (CUDA only; a single run
    then trains in the packed module too). `layout` picks the packed activation layout
    (spherelab.ensemble.ensemble_skeleton). `stop`, asked at every epoch end, can stop the
    pack there with a checkpoint of every running member (train.loop.Interrupted): a
    preempted job's runs then resume exactly from that step."""
    cfgs, outs = list(cfgs), [Path(o) for o in out_dirs]
    if len(cfgs) != len(outs) or not cfgs:
        raise ValueError(
            f"got {len(cfgs)} configs and {len(outs)} out_dirs; pass one "
            "directory per config (at least one)"
        )
    if len({o.resolve() for o in outs}) != len(outs):
        raise ValueError("out_dirs repeat a directory; give every member its own directory")
    if len(cfgs) > 1:
        check_packable(cfgs)
    _check_hooks(cfgs[0], hooks)
    if cuda_graph and resolve_device(cfgs[0].train.device).type != "cuda":
        raise ValueError(
            f"cuda_graph needs train.device=cuda, got {cfgs[0].train.device!r}; "
            "use a CUDA device or turn cuda_graph off"
        )
    # Each run directory is locked while its run writes there: a second writer is refused.
    with hold_all(outs, "train"):
        summaries = [run_files.prepare_dir(c, o, resume) for c, o in zip(cfgs, outs)]
        todo = [k for k, s in enumerate(summaries) if s is None]
        if not todo:
            return [s for s in summaries if s is not None]
        # A pack that resumes keeps the members that already finished, frozen: the same module
        # computes the same numbers, so the others resume exactly as if never interrupted.
        keep = list(range(len(cfgs))) if resume and len(cfgs) > 1 else todo
        with deterministic_mode(cfgs[0].train.deterministic):
            pack = build_pack(
                [cfgs[k] for k in keep],
                [outs[k] for k in keep],
                packed=len(keep) > 1 or cuda_graph,
                shared_batches=shared_batches,
                layout=layout,
            )
            for i, k in enumerate(keep):
                if summaries[k] is not None:
                    pack.members[i].summary = summaries[k]
                    pack.share.freeze(i)
            start = run_files.start(pack, resume)
            run_loop(pack, start, progress_fn(progress), hooks, cuda_graph, stop)
        for k, m in zip(keep, pack.members):
            summaries[k] = m.summary
        return [s for s in summaries if s is not None]


def _check_hooks(cfg: Config, hooks: Sequence[RecordHook]) -> None:
    served = {getattr(h, "serves", None) for h in hooks}
    if cfg.train.diagnose and "train.diagnose" not in served:
        raise ValueError(
            f"train.diagnose={cfg.train.diagnose!r} needs the diagnostics hook: pass "
            "hooks=spherelab.diagnose.hooks_for(cfg) (the CLI and run_sweep do)"
        )
    if cfg.train.log and "train.log" not in served:
        raise ValueError(
            f"train.log={cfg.train.log!r} needs its record hook: pass "
            "hooks=spherelab.diagnose.hooks_for(cfg) (the CLI and run_sweep do)"
        )


def progress_fn(progress: bool | ProgressFn) -> ProgressFn | None:
    """A callable stays; True logs one line per epoch/record; False is silent."""
    if callable(progress):
        return progress
    if not progress:
        return None

    def to_log(info: dict[str, Any]) -> None:
        rec = info["record"]
        log.info(
            "step %d/%d epoch %.1f train_loss %.4g test_acc %.3f",
            info["step"],
            info["total"],
            info["epoch"],
            rec["train_loss"],
            rec["test_acc"],
        )

    return to_log
