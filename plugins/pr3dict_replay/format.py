"""The recording file format (``docs/recording.md``): zstd-compressed JSON lines.

Each line is one record ``{"k": kind, "t": receive time in ns, "v": venue id, ...}``. A
file starts with a ``header``; the writer ends a zstd frame every ``flush_s`` so a crash
loses at most that much, and a reader stops cleanly at a truncated tail. Rotation starts a
new part (``NAME.1.jsonl.zst``, ...) and the old part's last record names the next, so a
reader given the first part plays the whole chain.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import zstandard

from pr3dict_core.model import Pr3dictError

FORMAT = "pr3dict-recording"
VERSION = 1
SUFFIX = ".jsonl.zst"
VENUE_TYPES = ("polymarket", "kalshi")  # the venues a recording can hold

log = logging.getLogger("pr3dict.replay")


class RecordingError(Pr3dictError):
    pass


def part_path(first: Path, n: int) -> Path:
    """The n-th part of a recording: ``rec.jsonl.zst``, ``rec.1.jsonl.zst``, ..."""
    if n == 0:
        return first
    name = first.name
    base = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    return first.with_name(f"{base}.{n}{SUFFIX}")


class RecordingWriter:
    """Append-only, compressed, rotating. Memory stays bounded: lines go straight into the
    streaming compressor, whose buffer is flushed to disk every ``flush_s``."""

    def __init__(self, path: Path, header: dict[str, Any], *, rotate_bytes: int | None = None,
                 rotate_s: float | None = None, flush_s: float = 1.0, level: int = 3,
                 clock: Callable[[], int] = time.time_ns,
                 on_rotate: Callable[[], None] | None = None):
        self.first = path
        self.header = header
        self.rotate_bytes = rotate_bytes
        self.rotate_s = rotate_s
        self.flush_s = flush_s
        self.clock = clock
        self.on_rotate = on_rotate
        self._cctx = zstandard.ZstdCompressor(level=level)
        self.part = -1
        self.parts: list[Path] = []
        self.records = 0
        self.raw_bytes = 0  # uncompressed JSON bytes written
        self._closed_bytes = 0
        self._file: Any = None
        self._stream: Any = None
        self._opened_ns = 0
        self._flushed_ns = 0
        self._open_next()

    @property
    def compressed_bytes(self) -> int:
        return self._closed_bytes + (self._file.tell() if self._file is not None else 0)

    def _open_next(self) -> None:
        self.part += 1
        path = part_path(self.first, self.part)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("xb")  # never overwrite a recording
        self._stream = self._cctx.stream_writer(self._file, closefd=False)
        self.parts.append(path)
        self._opened_ns = self._flushed_ns = self.clock()
        self._line({"k": "header", "t": self._opened_ns, "format": FORMAT, "version": VERSION,
                    "part": self.part, **self.header})

    def _line(self, record: dict[str, Any]) -> None:
        data = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)  # compact UTF-8 JSON
        self._stream.write(data)
        self.records += 1
        self.raw_bytes += len(data)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record; flushes a frame and rotates when due."""
        self._line(record)
        now = record.get("t") or self.clock()
        if now - self._flushed_ns >= self.flush_s * 1e9:
            self.flush()
        if (self.rotate_bytes is not None and self._file.tell() >= self.rotate_bytes) or \
                (self.rotate_s is not None and now - self._opened_ns >= self.rotate_s * 1e9):
            self.rotate()

    def flush(self) -> None:
        self._stream.flush(zstandard.FLUSH_FRAME)
        self._file.flush()
        self._flushed_ns = self.clock()

    def rotate(self) -> None:
        nxt = part_path(self.first, self.part + 1)
        self._close_part({"k": "end", "t": self.clock(), "next": nxt.name})
        self._open_next()
        if self.on_rotate is not None:
            self.on_rotate()  # the new part starts with markets and fresh snapshots

    def _close_part(self, last: dict[str, Any]) -> None:
        self._line(last)
        self._stream.flush(zstandard.FLUSH_FRAME)
        self._stream.close()
        self._closed_bytes += self._file.tell()
        self._file.close()
        self._file = None

    def close(self) -> None:
        if self._file is not None:
            self._close_part({"k": "end", "t": self.clock()})


def read_part(path: Path) -> Iterator[list[dict[str, Any]]]:
    """The records of one part, a decompressed chunk's worth at a time (so a replay steps
    through records without a generator per record); stops at a truncated tail (a crash
    mid-frame)."""
    dctx = zstandard.ZstdDecompressor()
    with path.open("rb") as f:
        reader = dctx.stream_reader(f, read_across_frames=True)
        n = 0
        tail = b""
        try:
            while chunk := reader.read(1 << 16):
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()  # an incomplete line, completed by the next chunk
                records = [orjson.loads(line) for line in lines]
                if n == 0 and records:
                    check_header(path, records[0])
                n += len(records)
                yield records
        except zstandard.ZstdError as exc:
            log.warning("recording %s: stops at a damaged frame after %d records: %s",
                        path, n, exc)
            return
        if tail:
            log.warning("recording %s: truncated last line ignored", path)


def check_header(path: Path, record: dict[str, Any]) -> None:
    if record.get("k") != "header" or record.get("format") != FORMAT:
        raise RecordingError(f"{path.name} is not a pr3dict recording")
    if not isinstance(record.get("version"), int) or record["version"] > VERSION:
        raise RecordingError(f"{path}: recording format version {record.get('version')} is "
                             f"newer than this pr3dict reads ({VERSION})")


def read_batches(path: Path) -> Iterator[list[dict[str, Any]]]:
    """The records of a recording in chunks, following rotated parts from the first one."""
    if not path.exists():
        raise RecordingError("no such recording file")
    current: Path | None = path
    while current is not None:
        nxt = None
        for records in read_part(current):
            if records and records[-1]["k"] == "end":  # a part's last record, if closed
                nxt = records.pop().get("next")
            yield records
        current = current.with_name(nxt) if nxt else None
        if current is not None and not current.exists():
            log.warning("recording part %s is missing; the replay stops there", current)
            return


def read_recording(path: Path) -> Iterator[dict[str, Any]]:
    """Every record of a recording, following rotated parts from the first one."""
    return itertools.chain.from_iterable(read_batches(path))
