"""The lake's layout on disk, its names, and crash-safe file writes.

    DIR/_lake.json                                  marks a directory as a metering lake
    DIR/_state/<node>.json                          a node's committed export position (written last)
    DIR/usage/day=YYYY-MM-DD/<node>-<first>-<last>.parquet         records first exported
    DIR/usage/day=YYYY-MM-DD/<node>-<first>-<last>-r<run>.parquet  records restated by re-rating run <run>
    DIR/rate_card/<node>.parquet                    the node's rate versions
    DIR/keys/<node>.parquet                         the node's keys (ids and accounts; never secrets)

`first` and `last` are the smallest and largest commit sequence number (`seq`) of the records in the
file; records from before sequence numbers existed are in files numbered 0-0. A file is written
under a hidden temporary name (a leading dot: Spark, Hive and DuckDB globs skip it), fsynced,
renamed into place and its directory fsynced, so it is seen whole or not at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metering.errors import MeteringError

FORMAT = "metering-lake"
VERSION = 1
MARKER = "_lake.json"
NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DAY_DIR = re.compile(r"^day=(\d{4}-\d{2}-\d{2})$")
# <first>-<last> or <first>-<last>-r<run>, after "<node>-"; a node id may itself hold "-" and digits,
# but only one split of a name leaves exactly this tail.
SEGMENT = re.compile(r"^(?P<node>[A-Za-z0-9_-]+?)-(?P<first>\d+)-(?P<last>\d+)(?:-r(?P<run>\d+))?\.parquet$")


class LakeError(MeteringError):
    """A lake directory or file that is not what it should be; the message names it."""

    code = "lake_error"


def check_node_id(node_id: str) -> str:
    if not isinstance(node_id, str) or not NODE_ID.match(node_id):
        raise LakeError(f"--node-id: {node_id!r} is not a node id (1-64 letters, digits, '-' or '_')")
    return node_id


def segment_name(node_id: str, first: int, last: int, run: int | None = None) -> str:
    return f"{node_id}-{first}-{last}" + (f"-r{run}" if run is not None else "") + ".parquet"


def day_dir(lake: Path, day: str) -> Path:
    return lake / "usage" / f"day={day}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir(path: Path) -> None:
    """mkdir -p, each new directory made durable in its parent."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
        fsync_dir(directory.parent)


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Any]:
    """Write `path` whole or not at all: a temporary name, fsync, rename, fsync of the directory."""
    make_dir(path.parent)
    tmp = temp_name(path)
    try:
        with tmp.open("wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_file(path) as handle:
        handle.write(json.dumps(data, indent=1, sort_keys=True).encode())


def open_lake(lake: Path, *, create: bool) -> Path:
    """The lake directory, checked: a directory with our marker (or, with `create`, a new or empty
    directory, which becomes one)."""
    lake = Path(lake)
    marker = lake / MARKER
    if lake.exists() and not lake.is_dir():
        raise LakeError(f"{lake} is not a directory, so it cannot be a lake")
    if marker.is_file():
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError) as exc:
            raise LakeError(f"{marker} is not a lake marker ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LakeError(f"{marker} does not mark a metering lake (format {data.get('format')!r})"
                            if isinstance(data, dict) else f"{marker} is not a lake marker")
        if data.get("version") != VERSION:
            raise LakeError(f"{lake} is a metering lake of version {data.get('version')!r}; this program reads "
                            f"version {VERSION}")
        return lake
    if not create:
        raise LakeError(f"{lake} is not a metering lake (no {MARKER}): run `metering lake sync` into it first")
    if lake.exists() and any(lake.iterdir()):
        raise LakeError(f"{lake} is not a metering lake (no {MARKER}) and is not empty: give a new or empty "
                        "directory, or the directory of an existing lake")
    make_dir(lake)
    write_json(marker, {"format": FORMAT, "version": VERSION})
    return lake
