"""The classifier's truncation table: every run of a long sweep labelled from its records up to
epoch 30, 60, 100 and 200, against its full-length label (the truth).

The sweep (MNIST-1D, 12 ELRs x 3 seeds, 600 epochs, one pack of 36 runs on a CPU, ~25 min):

    spherelab sweep --model mlp_si --dataset mnist1d --elrs logspace:1e-4:1:12 --seeds 0,1,2 \\
      --epochs 600 --set model.width=64 --set model.depth=3 --set data.train_subset=1000 \\
      --set data.subset=first --set data.batch_size=100 --set train.records=60 \\
      --set train.checkpoints=last --pack 36 --out /tmp/gt_mnist1d --no-report

Then ``python results/scripts/classifier_truth.py /tmp/gt_mnist1d results/classifier_truth``
writes truth.csv (one row per run) and truth.json (counts per truncation). A truncated label is
right when it equals the truth, undetermined when it says so, and wrong otherwise.
"""

import sys
from pathlib import Path

from spherelab.io import read_json, read_jsonl, write_csv, write_json
from spherelab.regimes import REGIMES, UNDETERMINED, distinct_records, label_run

TRUNCATIONS = (30, 60, 100, 200)


def main(sweep_dir: Path, out: Path) -> None:
    rows = []
    for run in sorted((sweep_dir / "runs").iterdir()):
        cfg, summary = read_json(run / "config.json"), read_json(run / "summary.json")
        records = distinct_records(read_jsonl(run / "metrics.jsonl"), run)
        classes = summary.get("num_classes")
        truth, stats = label_run(records, summary["status"], classes)
        row = {
            "elr": cfg["optim"]["elr"],
            "seed": cfg["train"]["seed"],
            "epochs": records[-1]["epoch"],
            "truth": truth,
            "truth_reason": stats["reason"],
        }
        for cut in TRUNCATIONS:
            part = [r for r in records if r["epoch"] <= cut]
            label, why = label_run(part, summary["status"], classes)
            row[f"label_{cut}"], row[f"reason_{cut}"] = label, why["reason"]
        rows.append(row)
    rows.sort(key=lambda r: (r["elr"], r["seed"]))
    columns = list(rows[0])
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "truth.csv", rows, columns)
    counts = {}
    for cut in TRUNCATIONS:
        judged = [r for r in rows if r["truth"] in REGIMES]
        got = [r[f"label_{cut}"] for r in judged]
        counts[str(cut)] = {
            "runs": len(judged),
            "correct": sum(g == r["truth"] for g, r in zip(got, judged)),
            "undetermined": got.count(UNDETERMINED),
            "wrong": sum(g not in (r["truth"], UNDETERMINED) for g, r in zip(got, judged)),
        }
    truths = {
        label: sum(r["truth"] == label for r in rows)
        for label in sorted({*REGIMES, *(r["truth"] for r in rows)})
    }
    write_json(out / "truth.json", {"runs": len(rows), "truth": truths, "truncations": counts})
    print(counts, truths)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
