"""Download a file with an md5 check, and unpack a tar.gz archive safely."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from spherelab.data.base import DataError
from spherelab.io import atomic_path

logger = logging.getLogger("spherelab")
_CHUNK = 1 << 20
TIMEOUT_S = 60.0


def md5_of(path: Path) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str) -> Path:
    """Fetch `url` to `dest` through a temporary file; keep it only if its md5 matches."""
    logger.info("downloading %s to %s", url, dest)
    with atomic_path(dest) as partial:  # a failed or corrupt download never reaches dest
        try:
            with (
                urllib.request.urlopen(url, timeout=TIMEOUT_S) as response,
                partial.open("wb") as out,
            ):
                shutil.copyfileobj(response, out, _CHUNK)
        except (urllib.error.URLError, OSError) as err:
            raise DataError(
                f"could not download {url} to {dest}: {err}. Check the network, or fetch the file "
                f"by hand and place it at {dest}"
            ) from err
        actual = md5_of(partial)
        if actual != md5:
            raise DataError(
                f"bad checksum for {url}: md5 {actual}, expected {md5}. The download was deleted; "
                "retry, or fetch the file from the official source by hand"
            )
    return dest


def extract_tar(archive: Path, dest: Path) -> None:
    """Unpack a tar.gz into `dest`, refusing members that would land outside it."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as err:
        raise DataError(
            f"could not unpack {archive}: {err}. Delete it and download it again"
        ) from err
