"""Reading a JSON object from a run or sweep file that may be missing or garbled (torch-free)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("spherelab")


def read_json_dict(path: Path, warn: bool = False) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when the file is missing, unreadable or not an
    object; `warn` logs why it was skipped."""
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
