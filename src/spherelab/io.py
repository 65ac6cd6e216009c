"""Torch-free file helpers of run and sweep directories: atomic writes, JSON, JSON lines, CSV.

Writes are atomic: the text goes to a temporary file in the target's directory, which is then
renamed over the target, so a reader (or a crash) sees the old file or the new one, never half
of one. Appending to a JSON-lines file is not atomic: a writer killed mid-line leaves a torn
last line, which `read_jsonl` drops (see there for the policy).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from io import StringIO
from pathlib import Path
from typing import Any

log = logging.getLogger("spherelab")

# The process's umask, read once at import (reading it means setting it), so that a file written
# through a private temporary file gets the permissions a plain open() would give it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path in `path`'s directory to write the new file to; on leaving the block it
    is renamed over `path` (or deleted if the block raised). Parent directories are created;
    the file gets the permissions a plain open() would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp made it private (0600)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8, newlines as given) to `path` atomically (atomic_path)."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def _jsonable(value: Any) -> Any:
    """json's `default` hook: arrays, tensors and their scalars (``tolist``) become lists or
    numbers. (Floats never reach it: json writes non-finite ones as NaN / Infinity itself.)"""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(
        f"cannot write a {type(value).__name__} as JSON; convert it to numbers, strings, "
        "lists or dicts first"
    )


def _dumps(payload: Any, **kwargs: Any) -> str:
    return json.dumps(payload, default=_jsonable, **kwargs)


def write_json(path: str | Path, payload: Any) -> None:
    """Write `payload` atomically as indented JSON with sorted keys. Arrays and tensors become
    lists; non-finite floats are written as NaN / Infinity, as Python's json reads them."""
    atomic_write_text(path, _dumps(payload, indent=2, sort_keys=True))


def read_json_dict(path: str | Path, warn: bool = False) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when the file is missing, unreadable or not an
    object; `warn` logs why it was skipped."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if warn:
            log.warning("missing %s; skipping it", path)
        return None
    except (OSError, ValueError) as exc:
        if warn:
            log.warning("cannot read %s (%s); skipping it", path, exc)
        return None
    if not isinstance(data, dict):
        if warn:
            log.warning("%s holds no JSON object; skipping it", path)
        return None
    return data


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, in order; [] when the file does not exist.

    Blank lines are skipped. A last line that is not valid JSON is the torn line of a writer
    killed mid-append: it is dropped with a warning. Any other line that is not a JSON object
    means the file is damaged: ValueError, naming the file and the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                log.warning(
                    "%s line %d is not valid JSON (a writer was killed mid-line); dropping it",
                    path,
                    number,
                )
                break
            raise ValueError(
                f"{path} line {number} is not valid JSON and not the last line: the file is "
                "damaged; restore it or rerun"
            ) from None
        if not isinstance(record, dict):
            raise ValueError(
                f"{path} line {number} holds a {type(record).__name__}, not a JSON object: "
                "the file is damaged; restore it or rerun"
            )
        records.append(record)
    return records


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write `rows` atomically, one JSON object a line (arrays and tensors become lists)."""
    atomic_write_text(path, "".join(_dumps(row) + "\n" for row in rows))


def append_jsonl(path: str | Path, row: Mapping[str, Any]) -> None:
    """Append one JSON object as a line (not atomic: a killed writer leaves a torn last line,
    which `read_jsonl` drops; rewrite the file with `write_jsonl` before appending again)."""
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(_dumps(row) + "\n")


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, every cell as text."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write `rows` atomically as CSV with a header of `columns` (a row may not hold other keys;
    a missing key is an empty cell). Lines end in CRLF, as the csv module writes them."""
    text = StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
