"""A run directory's files, for every member of a pack: refuse or reuse what is there, start
afresh, save and restore checkpoints (always in the single-run format), write the summary
(with the regime label), and relabel a finished run.

The contract is docs/run_files.md: config.json, metrics.jsonl, summary.json, checkpoints/.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch

from spherelab.config import Config, from_dict
from spherelab.io import read_json, read_json_dict, read_jsonl, write_json, write_jsonl
from spherelab.regimes import FINAL_STATUSES, distinct_records, label_run, regime_note
from spherelab.runtime import environment
from spherelab.train import checkpoints as ckpt
from spherelab.train.build import Pack
from spherelab.train.origin import origin_init

log = logging.getLogger("spherelab")
DIAGNOSTICS = "diagnostics.jsonl"  # written by record hooks or `spherelab diagnose`


def prepare_dir(cfg: Config, out: Path, resume: bool) -> dict[str, Any] | None:
    """Refuse a directory that holds a different run; return a finished run's summary. A run
    that never took a step (it failed at its start) holds nothing worth keeping: its files go,
    so the corrected command can start afresh in the same directory."""
    cfg_path = out / "config.json"
    out.mkdir(parents=True, exist_ok=True)
    if not cfg_path.exists():
        return None
    if never_stepped(out):
        log.info("%s holds a run that never took a step; starting afresh", out)
        discard(out)
        return None
    try:
        saved = from_dict(read_json(cfg_path))
    except ValueError:
        raise ValueError(f"{out} holds an unreadable config.json; choose another --out") from None
    if comparable(saved) != comparable(cfg):
        raise ValueError(
            f"{out} already holds a different run (its config.json differs); "
            "choose another --out or delete that directory"
        )
    summary = read_json_dict(out / "summary.json")
    if summary is not None and summary.get("status") in FINAL_STATUSES:
        if resume:
            return summary
        raise ValueError(
            f"{out} already holds this finished run; use another --out, or "
            "--resume to reuse its result"
        )
    if not resume and (out / "metrics.jsonl").exists():
        raise ValueError(
            f"{out} holds an unfinished run; pass --resume to continue it or choose another --out"
        )
    return None


def never_stepped(out: Path) -> bool:
    """Whether `out` holds a run that failed before its first step: no summary, no checkpoint
    and no record after step 0."""
    if (out / "summary.json").exists():
        return False
    if any(ckpt.checkpoint_step(p) > 0 for p in ckpt.list_checkpoints(out)):
        return False
    try:
        return all(r.get("step", 0) == 0 for r in read_jsonl(out / "metrics.jsonl"))
    except ValueError:  # a damaged file: keep it for a person to look at
        return False


def discard(out: Path) -> None:
    """Delete a run's files (the directory itself and files of others stay)."""
    for name in ("config.json", "metrics.jsonl", DIAGNOSTICS):
        (out / name).unlink(missing_ok=True)
    for path in [*ckpt.list_checkpoints(out), out / ckpt.CKPT_DIR / "init.pt"]:
        path.unlink(missing_ok=True)


def comparable(cfg: Config) -> dict[str, Any]:
    """The config minus where it runs: a run may resume on another device."""
    data = cfg.to_dict()
    data["train"].pop("device")
    return data


def start(pack: Pack, resume: bool) -> int:
    """Write each running member's config.json; resume from the latest checkpoint common to the
    running members (or start afresh: old records and diagnostics dropped, the init saved).
    Members that finished earlier (their summary is set) keep their files. Returns the step."""
    running = [k for k, m in enumerate(pack.members) if m.active]
    step = restore(pack) if resume else 0
    if step == 0:
        for k in running:
            m = pack.members[k]
            m.records = []
            (m.out / "metrics.jsonl").unlink(missing_ok=True)
            (m.out / DIAGNOSTICS).unlink(missing_ok=True)
            ckpt.save_init(m.out, pack.share.member_tensors(pack.recorder.init, k))
    env = environment(pack.device)
    for k in running:
        m = pack.members[k]
        write_json(m.out / "config.json", m.cfg.to_dict() | {"environment": env})
    return step


def resume_point(outs: list[Path]) -> tuple[int, list[dict[str, Any]]]:
    """The latest checkpoint step every directory holds readable, with those checkpoints
    (loaded on the CPU); (0, []) for none, or when only the start is left. Newer files, from a
    save round cut short or damaged, are removed, so that round is redone. A damaged checkpoint
    is passed over with a warning naming it and the one used instead; when no checkpoint is
    readable, CheckpointError names the newest."""
    steps = [{ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(o)} for o in outs]
    common = sorted(set.intersection(*steps) if steps else set(), reverse=True)
    chosen, states, damaged = 0, [], []
    for step in (s for s in common if s > 0):
        try:
            states = [ckpt.load_checkpoint(ckpt.checkpoint_path(o, step), "cpu") for o in outs]
        except ckpt.CheckpointError as err:
            damaged.append(err.path)
            log.warning("%s is not a readable spherelab checkpoint (%s)", err.path, err.why)
            continue
        chosen = step
        break
    if damaged and not chosen:
        where = ", ".join(str(o / ckpt.CKPT_DIR) for o in outs)
        raise ValueError(
            f"no readable checkpoint to resume from: {damaged[0]} and every earlier one are "
            "not readable spherelab checkpoints (truncated, damaged or foreign); delete "
            f"{where} to start afresh, or choose another --out"
        )
    if damaged:
        log.warning("resuming from step %d instead (the newest readable checkpoint)", chosen)
    for out in outs:
        for path in ckpt.list_checkpoints(out):
            if ckpt.checkpoint_step(path) > chosen:
                path.unlink()
    return chosen, states


def restore(pack: Pack) -> int:
    """Load the running members' checkpoints at their latest readable common step and keep
    their records (and diagnostics) up to it. A member that finished earlier is loaded from its
    last checkpoint and stays frozen, so the module, and its arithmetic, is the unbroken one."""
    step, loaded = resume_point([m.out for m in pack.members if m.active])
    if step == 0:
        return 0
    running_states = iter(loaded)
    states, inits, prevs = [], [], []
    for k, m in enumerate(pack.members):
        paths = ckpt.list_checkpoints(m.out) if not m.active else []
        inits.append(ckpt.load_init(m.out, pack.device))
        if not m.active and not paths:  # a finished member without checkpoints: its start
            states.append(copy.deepcopy(pack.share.member_state(k)))  # Packed: scratch tensors
            prevs.append([t.clone() for t in pack.share.member_tensors(pack.recorder.init, k)])
            continue
        # On the CPU first: RNG states must stay CPU ByteTensors (load_state_dict moves the rest).
        state = next(running_states) if m.active else ckpt.load_checkpoint(paths[-1], "cpu")
        states.append((state["model"], state["optimizer"]))
        prevs.append([t.to(pack.device) for t in state["prev"]])
        if not m.active:
            continue
        m.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        if m.aug_gen is not None:
            m.aug_gen.set_state(state["aug_rng"])
        m.remaining.clear()
        m.remaining.extend(t.to(pack.device) for t in state["remaining"])
        m.records = _rows_up_to(m.out / "metrics.jsonl", step)
        if (m.out / DIAGNOSTICS).exists():
            _rows_up_to(m.out / DIAGNOSTICS, step)
        log.info("resumed %s at step %d", m.out, step)
    pack.share.load_members(states)
    pack.recorder.init = pack.share.join(inits)
    pack.recorder.prev = pack.share.join(prevs)
    return step


def _rows_up_to(path: Path, step: int) -> list[dict[str, Any]]:
    """Keep the rows of a JSON-lines file up to `step` (later ones are redone); return them."""
    rows = [r for r in read_jsonl(path) if r["step"] <= step]
    write_jsonl(path, rows)
    return rows


def save(pack: Pack, step: int, only: list[int], always: bool = False) -> None:
    """Members `only`'s checkpoints at `step`: exactly what each single run would save.
    `always`: whatever train.checkpoints says (a stop between records: finish drops it)."""
    policy = pack.cfg.train.checkpoints
    if not always and (policy == "none" or (policy == "last" and step != pack.total_steps)):
        return
    for k in only:
        m = pack.members[k]
        model, optimizer = pack.share.member_state(k)
        payload = {
            "model": model,
            "optimizer": optimizer,
            "sampler": m.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "aug_rng": m.aug_gen.get_state() if m.aug_gen is not None else None,
            # clones: a view would save the whole packed tensor, every member's part
            "prev": [t.clone() for t in pack.share.member_tensors(pack.recorder.prev, k)],
            "remaining": [t.cpu() for t in m.remaining],
            "step": step,
        }
        ckpt.save_checkpoint(m.out, step, payload)


def finish(pack: Pack, k: int, status: str) -> dict[str, Any]:
    """Write member k's summary.json (the one summary schema) and keep it on the member:
    the last record's metrics plus the status, the regime label and what it rests on."""
    m, num_classes = pack.members[k], pack.data.num_classes
    recorded = {r["step"] for r in m.records}
    for path in ckpt.list_checkpoints(m.out):  # a stop's checkpoint between records: done with
        if ckpt.checkpoint_step(path) not in recorded:
            path.unlink()
    m.summary = dict(m.records[-1]) | {
        "status": status,
        **regime_fields(m.records, status, num_classes, m.cfg.train.init_from, None),
        "elr_config": m.cfg.optim.elr,
        "seed": m.cfg.train.seed,
        "num_classes": num_classes,
        "init_train_loss": m.records[0]["train_loss"],
    }
    write_json(m.out / "summary.json", m.summary)
    return m.summary


def regime_fields(
    records: list[dict[str, Any]],
    status: str,
    num_classes: int | None,
    init_from: str | None,
    lyapunov: tuple[float, float] | None,
) -> dict[str, Any]:
    """The summary's regime keys: `regime`, `regime_stats`, `regime_reason`, `regime_note` and
    `regime_origin` (a branch: whether the scratch init its label is judged against was found;
    "" for a run that is no branch)."""
    init = origin_init(init_from)
    regime, stats = label_run(records, status, num_classes, lyapunov=lyapunov, init=init)
    reason = str(stats.pop("reason", ""))
    return {
        "regime": regime,
        "regime_stats": stats,
        "regime_reason": reason,
        "regime_note": regime_note(records),
        "regime_origin": "" if init is None else "found" if init else "lost",
    }


def summary_lyapunov(summary: dict[str, Any]) -> tuple[float, float] | None:
    """(lyapunov, lyapunov_err) of a summary that has them (a measured run), else None."""
    value, err = summary.get("lyapunov"), summary.get("lyapunov_err")
    if value is None or err is None:
        return None
    return float(value), float(err)


def relabelled_summary(
    run_dir: str | Path, summary: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A finished run's summary (its summary.json unless given) re-classified from its
    metrics.jsonl with the current classifier (its Lyapunov exponent votes where the summary
    has one; a branch is judged against its scratch run's init); writes nothing (ValueError,
    naming the file, for records it cannot trust)."""
    out = Path(run_dir)
    summary = read_json(out / "summary.json") if summary is None else dict(summary)
    path = out / "metrics.jsonl"
    records = distinct_records(read_jsonl(path), path)
    cfg = read_json_dict(out / "config.json") or {}
    fields = regime_fields(
        records,
        summary.get("status", "finished"),
        summary.get("num_classes"),
        cfg.get("train", {}).get("init_from"),
        summary_lyapunov(summary),
    )
    summary.update(fields)
    return summary


def relabel_run(run_dir: str | Path) -> dict[str, Any]:
    """Re-classify a finished run (after the classifier changed) and rewrite summary.json
    (atomically); returns the new summary."""
    summary = relabelled_summary(run_dir)
    write_json(Path(run_dir) / "summary.json", summary)
    return summary
