"""The recording format: append-only zstd JSON lines, rotation into a chain of parts,
a crash's truncated tail, and versioning."""

from __future__ import annotations

import json

import pytest
import zstandard

from pr3dict_replay.format import RecordingError, RecordingWriter, part_path, read_recording


def _ws(n: int) -> dict:
    return {"k": "ws", "t": 1_000 + n, "v": "poly", "raw": json.dumps({"n": n, "pad": "x" * 40})}


def test_rotation_makes_a_chain_that_reads_back_in_order(tmp_path):
    first = tmp_path / "rec.jsonl.zst"
    rotated = []
    writer = RecordingWriter(first, {"pipeline": "p", "venues": {"poly": "polymarket"}},
                             rotate_bytes=600, flush_s=0, clock=lambda: 0,
                             on_rotate=lambda: rotated.append(writer.part))
    for n in range(200):
        writer.write(_ws(n))
    writer.close()
    assert len(writer.parts) >= 3 and rotated == list(range(1, len(writer.parts)))
    assert writer.parts[1] == part_path(first, 1) == tmp_path / "rec.1.jsonl.zst"
    records = list(read_recording(first))
    assert [r["raw"] for r in records if r["k"] == "ws"] == [_ws(n)["raw"] for n in range(200)]
    headers = [r for r in records if r["k"] == "header"]
    assert [h["part"] for h in headers] == list(range(len(writer.parts)))
    with pytest.raises(FileExistsError):  # a recording is never overwritten
        RecordingWriter(first, {})


def test_a_truncated_tail_is_dropped_and_the_rest_reads(tmp_path):
    path = tmp_path / "crash.jsonl.zst"
    writer = RecordingWriter(path, {"venues": {}}, flush_s=0, clock=lambda: 0)
    for n in range(50):
        writer.write(_ws(n))  # flush_s=0: a frame per record, as after each second live
    data = path.read_bytes()  # the writer "crashed": its last frame is still open
    (tmp_path / "cut.jsonl.zst").write_bytes(data[:-7])
    got = [r for r in read_recording(tmp_path / "cut.jsonl.zst") if r["k"] == "ws"]
    assert 40 <= len(got) < 50
    assert [r["raw"] for r in got] == [_ws(n)["raw"] for n in range(len(got))]


def test_a_newer_version_or_a_foreign_file_is_refused(tmp_path):
    newer = tmp_path / "v2.jsonl.zst"
    newer.write_bytes(zstandard.ZstdCompressor().compress(
        b'{"k":"header","t":0,"format":"pr3dict-recording","version":2}\n'))
    with pytest.raises(RecordingError, match="version 2 is newer"):
        list(read_recording(newer))
    foreign = tmp_path / "x.jsonl.zst"
    foreign.write_bytes(zstandard.ZstdCompressor().compress(b'{"hello":1}\n'))
    with pytest.raises(RecordingError, match="not a pr3dict recording"):
        list(read_recording(foreign))
