"""A study's ``storage`` given as a URI (``s3://bucket/path``, ``gs://...``): where Ray Tune keeps its experiments and
checkpoints, through pyarrow's file systems as Ray Tune opens them. Checked before anything is created: the file
system must answer within ``TIMEOUT_S`` and its bucket must exist (Ray Tune would otherwise fail with a traceback
after the MLflow runs exist). The check runs in a child process, so that a store that never answers (pyarrow retries
for minutes) is given up at the deadline. Standard library here; pyarrow in the child."""

from __future__ import annotations

import subprocess
import sys

TIMEOUT_S = 20.0

# Run in the child: exit 0 when the URI's file system answers and its bucket (the path's first part) exists, else
# print why and exit 1.
_PROBE = """
import sys
import pyarrow.fs as fs

try:
    system, path = fs.FileSystem.from_uri(sys.argv[1])
    bucket = path.split("/")[0]
    buckets = tuple(getattr(fs, name) for name in ("S3FileSystem", "GcsFileSystem") if hasattr(fs, name))
    if bucket and isinstance(system, buckets):
        if system.get_file_info(bucket).type == fs.FileType.NotFound:
            sys.exit(f"the bucket {bucket!r} does not exist (or these credentials cannot see it)")
    system.get_file_info(path)
except Exception as err:
    sys.exit(" ".join(str(err).split())[:300] or type(err).__name__)
"""


class StorageError(RuntimeError):
    """The storage URI cannot be used; the message is one line naming it and why."""


def check_storage(uri: str, timeout: float = TIMEOUT_S) -> None:
    """Raise StorageError unless the file system of ``uri`` answers within ``timeout`` seconds and its bucket
    exists. Creates nothing."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, uri], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise StorageError(f"storage {uri[:200]} did not answer within {timeout:g} s; check its address") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise StorageError(f"storage {uri[:200]} cannot be used: {why}")
