"""Where records wait for delivery: in memory (bounded), or in a disk spool (durable).

Both buffers hold records as serialized JSON lines (bytes) and answer the same questions:
append one, read a chunk from the acknowledged position, acknowledge a chunk, set records aside.
Positions only move forward when the service has acknowledged every record before them, so a
crash at any moment re-sends (duplicates, which the service counts and ignores) and never skips.

The disk spool, one directory shared by the processes of a gateway:

    spool_dir/
      rejected.ndjson          records the service refused, one JSON object a line with the error
      lane-0/                  one lane per live client, claimed with an exclusive flock on lane-N/lock
        lock
        cursor                 {"segment": S, "offset": O}: everything before it is acknowledged
        00000000000000000001.ndjson   append-only segments of records, one JSON line each
      lane-1/ ...

A client claims the lowest lane no other process holds (a gateway with several worker processes
gets one lane each; a restarted worker takes over the lane its predecessor left), and drains every
other unclaimed lane that still holds records before its own. The writer never appends to a
segment it did not create, so a line torn by a crash mid-write is always the last of its segment:
it was never acknowledged to a caller, and the reader skips it (logged).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import itertools
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

log = logging.getLogger("metering.client")

SEGMENT_BYTES = 16 * 1024 * 1024  # a new segment past this size; acknowledged segments are deleted
READ_BLOCK = 1024 * 1024


class QueueFull(Exception):
    """`send` on a client without a spool while `max_pending` records wait for delivery."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Records read from a buffer, and the position just past them."""

    lines: list[bytes]
    end: object
    source: object  # the buffer (or lane) the chunk came from, to acknowledge it there


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record the service refused: the record as sent, the service's error text, the HTTP status."""

    record: object
    error: str
    status: int


def rejected_line(line: bytes, error: str, status: int) -> bytes:
    """One line of rejected.ndjson: the record (as JSON when it parses, else as text) and the error."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = line.decode("utf-8", "replace")
    entry = {"rejected_at": datetime.now(UTC).isoformat(), "status": status, "error": error, "record": record}
    return orjson.dumps(entry) + b"\n"


class MemoryBuffer:
    """A bounded in-process queue. Positions are record sequence numbers."""

    durable = False

    def __init__(self, *, max_pending: int, max_rejected: int) -> None:
        self._lines: collections.deque[bytes] = collections.deque()
        self._first = 0  # sequence number of self._lines[0]
        self._lock = threading.Lock()
        self.max_pending = max_pending
        self._rejected: collections.deque[Rejected] = collections.deque(maxlen=max_rejected)

    def append(self, line: bytes) -> None:
        with self._lock:
            if len(self._lines) >= self.max_pending:
                raise QueueFull(f"{len(self._lines)} records are waiting for delivery (max_pending={self.max_pending});"
                                " the service is not taking them: give the client a spool_dir to queue on disk")
            self._lines.append(line)

    def pending(self) -> int:
        return len(self._lines)

    def end(self) -> int:
        with self._lock:
            return self._first + len(self._lines)

    def reached(self, mark: object) -> bool:
        return self._first >= mark  # type: ignore[operator]

    def read(self, max_records: int, max_bytes: int) -> Chunk | None:
        with self._lock:
            lines, size = [], 0
            for line in itertools.islice(self._lines, max_records):
                if lines and size + len(line) > max_bytes:
                    break
                lines.append(line)
                size += len(line) + 1
            return Chunk(lines, self._first + len(lines), self) if lines else None

    def ack(self, chunk: Chunk) -> None:
        with self._lock:
            while self._first < chunk.end:  # type: ignore[operator]
                self._lines.popleft()
                self._first += 1

    def set_aside(self, items: Iterable[tuple[bytes, str, int]]) -> None:
        for line, error, status in items:
            self._rejected.append(Rejected(orjson.loads(line), error, status))

    def rejected(self) -> list[Rejected]:
        return list(self._rejected)

    def unsent(self) -> list[dict]:
        with self._lock:
            return [orjson.loads(line) for line in self._lines]

    def close(self) -> None:
        pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_name(number: int) -> str:
    return f"{number:020d}.ndjson"


class Lane:
    """One lane of the spool: append-only segments, a cursor, and (for the owner) a writer that
    groups the fsyncs of concurrent appends. Positions are (segment number, byte offset)."""

    def __init__(self, path: Path, lock_fd: int, *, writable: bool) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self.writable = writable
        self._cond = threading.Condition()
        self.segments = sorted(int(p.name.split(".")[0]) for p in path.glob("*.ndjson") if p.name[:1].isdigit())
        self.cursor = self._read_cursor()
        # Writer state (owner only): the open segment, its written and durable sizes.
        self._fd: int | None = None
        self._closed = not writable
        self._segment = 0
        self._size = 0
        self._durable_size = 0
        self._written = 0  # appends so far
        self._synced = 0  # appends known durable
        self._syncing = False
        self.fsyncs = 0
        self.pending_records = self._count_pending()
        if writable:
            self._open_segment((self.segments[-1] if self.segments else 0) + 1)

    # --- cursor --------------------------------------------------------------------------

    def _read_cursor(self) -> tuple[int, int]:
        try:
            data = orjson.loads((self.path / "cursor").read_bytes())
            return int(data["segment"]), int(data["offset"])
        except FileNotFoundError:
            pass
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("spool %s: unreadable cursor; re-sending the lane from its start (the service counts "
                        "re-sent records as duplicates)", self.path)
        return (self.segments[0], 0) if self.segments else (0, 0)

    def _write_cursor(self, position: tuple[int, int]) -> None:
        tmp = self.path / "cursor.tmp"
        with open(tmp, "wb") as f:
            f.write(orjson.dumps({"segment": position[0], "offset": position[1]}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / "cursor")

    def _count_pending(self) -> int:
        count = 0
        for segment in self.segments:
            if segment < self.cursor[0]:
                continue
            start = self.cursor[1] if segment == self.cursor[0] else 0
            with open(self.path / _segment_name(segment), "rb") as f:
                f.seek(start)
                while block := f.read(READ_BLOCK):
                    count += block.count(b"\n")
        return count

    # --- writing (the owner's lane) ---------------------------------------------------------

    def _open_segment(self, number: int) -> None:
        path = self.path / _segment_name(number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            _fsync_dir(self.path)
        except OSError:
            os.close(fd)
            path.unlink()
            raise
        self._fd, self._segment, self._size, self._durable_size = fd, number, 0, 0
        self.segments.append(number)

    def append(self, line: bytes) -> None:
        """Write one line and return once it is on disk. Concurrent callers share fsyncs: the first
        to find no fsync running makes one for every line written so far; the others wait for it."""
        with self._cond:
            if self._closed:
                raise ValueError("the spool is closed")
            if self._fd is not None and self._size >= SEGMENT_BYTES:
                self._rotate()
            if self._fd is None:  # rotated, but the new segment could not be created (a full disk): try again
                self._open_segment(self._segment + 1)
            try:
                written = os.write(self._fd, line)
                if written != len(line):
                    raise OSError(f"short write to the spool ({written} of {len(line)} bytes)")
            except OSError:
                os.ftruncate(self._fd, self._size)  # leave no torn line behind
                raise
            self._size += written
            self._written += 1
            mine = self._written
        while True:
            with self._cond:
                if self._synced >= mine:
                    return
                if not self._syncing:
                    self._syncing = True
                    fd, segment, target, size = self._fd, self._segment, self._written, self._size
                    break
                self._cond.wait()
        try:
            os.fdatasync(fd)  # type: ignore[arg-type]
        except OSError:
            with self._cond:
                self._syncing = False
                self._cond.notify_all()
            raise
        with self._cond:
            self._syncing = False
            self.fsyncs += 1
            self._mark_durable(target)
            if segment == self._segment:  # (a rotation waits for a running fsync, so it always is)
                self._durable_size = max(self._durable_size, size)
            self._cond.notify_all()

    def _mark_durable(self, appends: int) -> None:
        """Holding the condition: the first `appends` appends are on disk (and may be read and sent)."""
        if appends > self._synced:
            self.pending_records += appends - self._synced
            self._synced = appends

    def _rotate(self) -> None:
        """Called holding the condition: wait out a running fsync, make the old segment durable, start a new one."""
        while self._syncing:
            self._cond.wait()
        assert self._fd is not None
        os.fdatasync(self._fd)
        self.fsyncs += 1
        os.close(self._fd)
        self._fd = None
        self._mark_durable(self._written)
        self._open_segment(self._segment + 1)

    # --- reading ------------------------------------------------------------------------------

    def _readable_end(self, segment: int) -> int | None:
        """Bytes of a segment that may be read: its durable size while it is being written."""
        if self.writable and segment == self._segment:
            with self._cond:
                return self._durable_size
        return None  # the whole file

    def end(self) -> tuple[int, int]:
        with self._cond:
            return (self._segment, self._size)

    def reached(self, mark: tuple[int, int]) -> bool:
        """Every record appended before `mark` was taken is acknowledged (or set aside)."""
        with self._cond:
            return self.pending_records <= 0 or self.cursor >= mark

    def read(self, max_records: int, max_bytes: int) -> Chunk | None:
        segment, offset = self.cursor
        for number in self.segments:
            if number < segment:
                continue
            if number > segment:
                offset = 0
            limit = self._readable_end(number)
            lines, end = self._read_lines(number, offset, limit, max_records, max_bytes)
            if lines:
                return Chunk(lines, (number, end), self)
            if end != offset:  # only a torn tail was there: move past it
                return Chunk([], (number, end), self)
            if limit is not None:  # the segment being written: nothing durable beyond the cursor yet
                return None
        return None

    def _read_lines(self, number: int, offset: int, limit: int | None, max_records: int,
                    max_bytes: int) -> tuple[list[bytes], int]:
        lines: list[bytes] = []
        with open(self.path / _segment_name(number), "rb") as f:
            f.seek(offset)
            size = os.fstat(f.fileno()).st_size if limit is None else limit
            budget = min(size - offset, max_bytes)
            data = f.read(budget) if budget > 0 else b""
        position = offset
        start = 0
        while len(lines) < max_records:
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            lines.append(data[start:newline])
            start = newline + 1
        position = offset + start
        if not lines and data and limit is None and offset + len(data) == size and len(data) < max_bytes:
            # The rest of a finished segment has no newline: a line torn by a crash before its fsync,
            # never acknowledged to a sender. Skip it, and say so.
            log.warning("spool %s: skipping %d bytes of an incomplete last line in segment %d (a crash cut it "
                        "before it was durable; its send() never returned)", self.path, len(data), number)
            position = size
        if not lines and data and len(data) >= max_bytes:
            raise ValueError(f"spool {self.path}: a line in segment {number} at byte {offset} is longer than "
                             f"{max_bytes} bytes")
        return lines, position

    def ack(self, chunk: Chunk, count: int) -> None:
        position = chunk.end
        self._write_cursor(position)  # type: ignore[arg-type]
        with self._cond:
            self.cursor = position  # type: ignore[assignment]
            self.pending_records -= count
            finished = [n for n in self.segments if n < self.cursor[0]]
            self.segments = [n for n in self.segments if n >= self.cursor[0]]
        for number in finished:
            with contextlib.suppress(FileNotFoundError):
                (self.path / _segment_name(number)).unlink()

    def drained(self) -> bool:
        """Nothing left to read (for an adopted lane: it can be let go)."""
        if not self.segments:
            return True
        last = self.segments[-1]
        size = (self.path / _segment_name(last)).stat().st_size
        return self.cursor >= (last, size) and all(n >= last for n in self.segments)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            while self._syncing:
                self._cond.wait()
            if self._fd is not None:
                os.fdatasync(self._fd)
                os.close(self._fd)
                self._fd = None
                self._mark_durable(self._written)
                self._cond.notify_all()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1


def _try_lock(path: Path) -> int | None:
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Spool:
    """The disk spool: this client's own lane (written and read) and unclaimed lanes it adopted
    (read, then let go). Positions: a mark is (own lane's end, adopted lanes at the time)."""

    durable = True

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rejected_path = self.directory / "rejected.ndjson"
        self._lock = threading.Lock()
        own: Lane | None = None
        self.adopted: list[Lane] = []
        existing = sorted((p for p in self.directory.glob("lane-*") if p.name[5:].isdigit()),
                          key=lambda p: int(p.name[5:]))
        for lane_dir in existing:
            fd = _try_lock(lane_dir)
            if fd is None:
                continue  # another live client's lane
            if own is None:
                own = Lane(lane_dir, fd, writable=True)
            else:
                lane = Lane(lane_dir, fd, writable=False)
                if lane.pending_records:
                    self.adopted.append(lane)
                else:
                    self._let_go(lane)
        number = 0
        while own is None:
            lane_dir = self.directory / f"lane-{number}"
            if not lane_dir.exists():
                fd = _try_lock(lane_dir)
                if fd is not None:
                    _fsync_dir(self.directory)
                    own = Lane(lane_dir, fd, writable=True)
            number += 1
        self.own = own
        recovered = own.pending_records + sum(lane.pending_records for lane in self.adopted)
        if recovered:
            log.info("spool %s: %d records from an earlier run wait for delivery", self.directory, recovered)

    @property
    def lane(self) -> Path:
        return self.own.path

    @property
    def fsyncs(self) -> int:
        return self.own.fsyncs

    def append(self, line: bytes) -> None:
        self.own.append(line)

    def pending(self) -> int:
        return self.own.pending_records + sum(lane.pending_records for lane in self.adopted)

    def end(self) -> object:
        with self._lock:
            return (self.own.end(), tuple(self.adopted))

    def reached(self, mark: object) -> bool:
        own_end, adopted = mark  # type: ignore[misc]
        with self._lock:
            if any(lane in self.adopted for lane in adopted):
                return False
        return self.own.reached(own_end)

    def read(self, max_records: int, max_bytes: int) -> Chunk | None:
        while True:
            with self._lock:
                lane = self.adopted[0] if self.adopted else self.own
            chunk = lane.read(max_records, max_bytes)
            if chunk is not None or lane is self.own:
                return chunk
            self._let_go(lane)

    def _let_go(self, lane: Lane) -> None:
        """An adopted lane is drained: delete its files and release it."""
        with self._lock:
            if lane in self.adopted:
                self.adopted.remove(lane)
        if not lane.drained():
            log.warning("spool %s: lane %s ends in an incomplete line (a crash cut it before it was durable; its "
                        "send() never returned): discarded", self.directory, lane.path.name)
        for path in lane.path.glob("*.ndjson"):
            path.unlink()
        with contextlib.suppress(FileNotFoundError):
            (lane.path / "cursor").unlink()
        lane.close()
        log.info("spool %s: lane %s delivered and released", self.directory, lane.path.name)

    def ack(self, chunk: Chunk, count: int | None = None) -> None:
        lane = chunk.source
        assert isinstance(lane, Lane)
        lane.ack(chunk, len(chunk.lines) if count is None else count)
        if lane is not self.own and lane.pending_records <= 0:
            self._let_go(lane)

    def set_aside(self, items: Iterable[tuple[bytes, str, int]]) -> None:
        """Append refused records to rejected.ndjson (durably, before the cursor moves past them).
        The file is shared by the lanes' processes: each append holds an flock on it."""
        data = b"".join(rejected_line(line, error, status) for line, error, status in items)
        if not data:
            return
        fd = os.open(self.rejected_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def rejected(self) -> list[Rejected]:
        out = []
        with contextlib.suppress(FileNotFoundError), open(self.rejected_path, "rb") as f:
            for line in f:
                entry = orjson.loads(line)
                out.append(Rejected(entry["record"], entry["error"], entry["status"]))
        return out

    def close(self) -> None:
        self.own.close()
        for lane in self.adopted:
            lane.close()
