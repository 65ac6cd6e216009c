"""Tests for spherelab.io: atomic writes, JSON, JSON lines and CSV, without torch."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spherelab.io import (
    append_jsonl,
    atomic_path,
    atomic_write_text,
    read_csv,
    read_json,
    read_json_dict,
    read_jsonl,
    write_csv,
    write_json,
    write_jsonl,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def test_an_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "file.txt"
    atomic_write_text(path, "old\n")
    atomic_write_text(path, "new\r\n")
    assert path.read_bytes() == b"new\r\n"  # newlines as given, parents created
    assert os.listdir(path.parent) == ["file.txt"]


def test_an_atomic_write_gives_the_permissions_of_a_plain_write(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    mode = [os.stat(tmp_path / name).st_mode & 0o777 for name in ("plain.txt", "atomic.txt")]
    assert mode[0] == mode[1]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "summary.json"
    write_json(path, {"regime": "convergence"})

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_json(path, {"regime": "divergence"})
    assert read_json_dict(path) == {"regime": "convergence"}
    assert os.listdir(tmp_path) == ["summary.json"]


def test_write_json_sorts_keys_and_writes_arrays_and_non_finite_numbers(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    write_json(path, {"b": np.array([1.0, 2.0]), "a": math.nan, "c": np.float32(0.5)})
    text = path.read_text()
    assert text.index('"a"') < text.index('"b"') < text.index('"c"')
    data = json.loads(text)
    assert data["b"] == [1.0, 2.0] and data["c"] == 0.5 and math.isnan(read_json(path)["a"])
    with pytest.raises(TypeError, match="cannot write a object as JSON"):
        write_json(path, {"x": object()})


def test_strict_json_lists_non_finite_values_at_any_depth_and_reads_them_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "row.json"
    row = {"loss": math.inf, "eigs": [1.0, -math.inf], "norms": {"a/b": math.nan}, "ok": 2.0}
    write_json(path, row)
    strict = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(name))
    assert strict["loss"] is None and strict["eigs"] == [1.0, None] and strict["ok"] == 2.0
    assert strict["nonfinite_values"] == {"loss": "inf", "eigs/1": "-inf", "norms/a~1b": "nan"}
    back = read_json(path)
    assert back["loss"] == math.inf and back["eigs"] == [1.0, -math.inf]
    assert math.isnan(back["norms"]["a/b"]) and "nonfinite_values" not in back
    write_json(path, {"x": 1.0})
    assert "nonfinite_values" not in path.read_text()  # only when there is one


def test_read_json_dict_returns_none_for_missing_garbled_or_non_object_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "garbled.json").write_text('{"a": ')
    (tmp_path / "list.json").write_text("[1, 2]")
    with caplog.at_level(logging.WARNING, logger="spherelab"):
        for name in ("missing.json", "garbled.json", "list.json"):
            assert read_json_dict(tmp_path / name, warn=True) is None
    assert caplog.text.count("skipping it") == 3


def test_jsonl_rows_round_trip_through_write_and_append(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    write_jsonl(path, [{"step": 0, "w": np.zeros(2)}])
    append_jsonl(path, {"step": 1, "loss": math.inf})
    rows = read_jsonl(path)
    assert rows[0] == {"step": 0, "w": [0.0, 0.0]}
    assert rows[1]["step"] == 1 and rows[1]["loss"] == math.inf
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_a_torn_last_line_is_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\n\n{"step": 1}\n{"step": 2, "train_lo')  # killed mid-line
    with caplog.at_level(logging.WARNING, logger="spherelab"):
        assert read_jsonl(path) == [{"step": 0}, {"step": 1}]
    assert "line 4 is not valid JSON" in caplog.text


@pytest.mark.parametrize("damage", ['{"step": 0}\n{"ste\n{"step": 2}\n', '{"step": 0}\n[1, 2]\n'])
def test_a_damaged_line_before_the_end_or_a_non_object_is_an_error(
    tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(damage)
    with pytest.raises(ValueError, match="line 2 .*damaged"):
        read_jsonl(path)


def test_write_csv_writes_a_header_and_empty_cells_for_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "summary.csv"
    write_csv(path, [{"elr": 0.001, "regime": "convergence"}, {"elr": 0.01}], ["elr", "regime"])
    assert path.read_bytes().startswith(b"elr,regime\r\n")
    with path.open(newline="") as handle:
        assert list(csv.DictReader(handle)) == [
            {"elr": "0.001", "regime": "convergence"},
            {"elr": "0.01", "regime": ""},
        ]


def test_io_imports_without_torch() -> None:
    script = (
        "import sys, types, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "pkg = types.ModuleType('spherelab'); pkg.__path__ = [sys.argv[1] + '/spherelab']\n"
        "sys.modules['spherelab'] = pkg\n"
        "import spherelab.io\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(SRC)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]  # no temporary left


@pytest.mark.parametrize("last", ["0.1,2", "0.1,2,3,4"])
def test_a_damaged_csv_row_is_an_error_naming_the_file_and_line(tmp_path, last):
    path = tmp_path / "summary.csv"
    path.write_text(f"elr,seed,regime\n0.01,0,convergence\n{last}\n")
    with pytest.raises(ValueError, match=r"summary.csv is damaged: line 3 has [24] cell"):
        read_csv(path)
