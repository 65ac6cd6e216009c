"""Torch-free file helpers of run and sweep directories: atomic writes, JSON, JSON lines, CSV.

Writes are atomic: the text goes to a temporary file in the target's directory, which is then
renamed over the target, so a reader (or a crash) sees the old file or the new one, never half
of one. Appending to a JSON-lines file is not atomic: a writer killed mid-line leaves a torn
last line, which `read_jsonl` drops (see there for the policy). JSON is strict (no NaN or
Infinity; see `strict`), and `os_error_line` turns an OSError into one line that names the path
and the fix.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import math
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


# Strict JSON has no NaN or Infinity. A non-finite float is written as null, and the object at
# the top of the file (a summary, a metrics line) lists it under this key, by its path inside the
# object (keys and list indices joined by "/"), with its value as text: "nan", "inf" or "-inf".
# The readers below put the floats back, so Python code sees what was written.
NONFINITE_KEY = "nonfinite_values"
# One object per value, as json's own NaN parsing gives (so equal records compare equal).
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _plain(value: Any, path: str, found: dict[str, str]) -> Any:
    """`value` with arrays and tensors as lists and non-finite floats as None (noted in
    `found` under their path)."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        found[path] = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {k: _plain(v, _join(path, str(k)), found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, _join(path, str(i)), found) for i, v in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy / torch arrays and their scalars
        return _plain(value.tolist(), path, found)
    raise TypeError(
        f"cannot write a {type(value).__name__} as JSON; convert it to numbers, strings, "
        "lists or dicts first"
    )


def _join(path: str, key: str) -> str:
    key = key.replace("~", "~0").replace("/", "~1")  # as a JSON pointer escapes them
    return f"{path}/{key}" if path else key


def strict(payload: Any) -> Any:
    """`payload` ready for strict JSON: arrays and tensors as lists, non-finite floats as null;
    a top-level object lists those under NONFINITE_KEY (see above)."""
    if isinstance(payload, Mapping) and NONFINITE_KEY in payload:
        payload = restore(dict(payload))  # already strict once: redo it from the floats
    found: dict[str, str] = {}
    plain = _plain(payload, "", found)
    if found and isinstance(plain, dict):
        plain[NONFINITE_KEY] = found
    return plain


def restore(data: Any) -> Any:
    """The inverse of `strict` on a parsed object: the listed nulls become floats again."""
    if not isinstance(data, dict) or not isinstance(data.get(NONFINITE_KEY), dict):
        return data
    for path, text in data.pop(NONFINITE_KEY).items():
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in str(path).split("/")]
        node: Any = data
        try:
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            value = _NONFINITE[str(text)]
            if isinstance(node, list):
                node[int(last)] = value
            elif last in node:
                node[last] = value
        except (KeyError, IndexError, ValueError, TypeError):  # a hand-edited file: keep null
            continue
    return data


def dumps(payload: Any, **kwargs: Any) -> str:
    """`payload` as strict JSON text (see `strict`)."""
    return json.dumps(strict(payload), allow_nan=False, **kwargs)


def write_json(path: str | Path, payload: Any) -> None:
    """Write `payload` atomically as indented, strict JSON with sorted keys (see `strict`)."""
    atomic_write_text(path, dumps(payload, indent=2, sort_keys=True))


def read_json(path: str | Path) -> Any:
    """The JSON in `path`, with the non-finite floats `strict` wrote put back (raises OSError
    or ValueError)."""
    return restore(json.loads(Path(path).read_text(encoding="utf-8")))


def read_json_dict(path: str | Path, warn: bool = False) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when the file is missing, unreadable or not an
    object; `warn` logs why it was skipped."""
    path = Path(path)
    try:
        data = read_json(path)
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
        records.append(restore(record))
    return records


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write `rows` atomically, one strict JSON object a line (see `strict`)."""
    atomic_write_text(path, "".join(dumps(row) + "\n" for row in rows))


def append_jsonl(path: str | Path, row: Mapping[str, Any]) -> None:
    """Append one JSON object as a line (not atomic: a killed writer leaves a torn last line,
    which `read_jsonl` drops; rewrite the file with `write_jsonl` before appending again)."""
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(dumps(row) + "\n")


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, every cell as text; a row with more or fewer
    cells than the header (a damaged file) is a ValueError naming the file and the line."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    width = len(reader.fieldnames or ())
    for number, row in enumerate(rows, start=2):
        if None in row or None in row.values():
            cells = sum(v is not None for k, v in row.items() if k is not None)
            cells += len(row.get(None) or ())
            raise ValueError(
                f"{path} is damaged: line {number} has {cells} cell(s) where the header has "
                f"{width}; restore the file, or rerun the command that wrote it"
            )
    return rows


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write `rows` atomically as CSV with a header of `columns` (a row may not hold other keys;
    a missing key is an empty cell). Lines end in CRLF, as the csv module writes them."""
    text = StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


# errno -> what to do about it (the path and the system's words come first).
_OS_FIXES = {
    errno.ENOSPC: "free some space or write somewhere else (--out)",
    errno.EDQUOT: "free some space or write somewhere else (--out)",
    errno.EACCES: "choose a path you may write to (--out), or fix its permissions",
    errno.EPERM: "choose a path you may write to (--out), or fix its permissions",
    errno.EROFS: "the file system is read-only: choose a writable --out",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
    errno.EEXIST: "a file is in the way: remove it or choose another path",
    errno.EISDIR: "it is a directory: give a file instead",
    errno.ENOENT: "check the path",
}


def os_error_line(err: OSError) -> str:
    """One line for an OSError: the path, the system's words and the fix. An OSError raised
    with our own message (no errno) keeps it."""
    if err.errno is None or not err.strerror:
        return " ".join(str(err).split())
    where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    fix = _OS_FIXES.get(err.errno, "check the path and try again")
    return f"{where + ': ' if where else ''}{err.strerror}; {fix}"
