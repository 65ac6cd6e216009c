"""User data from one .npz file with arrays x_train, y_train, x_test, y_test (any sample shape)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from spherelab.data.base import DataError, RawSplits, check_splits

KEYS = ("x_train", "y_train", "x_test", "y_test")


def load(path: str | Path) -> RawSplits:
    """Classes = 1 + the largest label of either split (or the optional scalar `num_classes`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(
            f"npz file {path} does not exist; pass 'npz:PATH' with the path of a .npz holding "
            f"{', '.join(KEYS)} (np.savez(PATH, x_train=..., ...))"
        )
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"{path} is not a .npz archive (a .npz is a zip of arrays); write it with "
            "np.savez(PATH, x_train=..., y_train=..., x_test=..., y_test=...)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = list(npz.files)
            arrays = {key: npz[key] for key in KEYS if key in files}
            declared = int(npz["num_classes"]) if "num_classes" in files else None
    except (OSError, ValueError, TypeError, zipfile.BadZipFile) as err:
        raise DataError(
            f"could not read {path} as a .npz of plain arrays ({err}); write it with np.savez"
        ) from err
    missing = [key for key in KEYS if key not in arrays]
    if missing:
        raise DataError(
            f"{path} lacks the arrays {missing} (it has {files}); save it with all of {', '.join(KEYS)}"
        )
    for key in ("y_train", "y_test"):
        if arrays[key].size == 0 or not np.issubdtype(arrays[key].dtype, np.integer):
            raise DataError(
                f"{path}: {key} has dtype {arrays[key].dtype} and {arrays[key].size} entries; "
                "expected a non-empty integer array of class indices"
            )
    largest = max(int(arrays["y_train"].max()), int(arrays["y_test"].max()))
    raw = RawSplits(num_classes=declared if declared is not None else largest + 1, **arrays)
    return check_splits(raw, f"npz:{path}")
