"""The records of a W&B run file (run-ID.wandb), which W&B's client writes and `wandb sync`
uploads. W&B 0.31 reads it only in its Go core, so the test reads it here: LevelDB's log format
(32 KiB blocks of records, each a 7-byte header of CRC, length and type), after a 7-byte
file header (":W&B", magic, version); every record is a protobuf `Record` of W&B's own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER = 32 * 1024, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (FIRST, MIDDLE):
            pending = chunk if kind == FIRST else pending + chunk
            continue
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + chunk if kind == LAST else chunk)
            pending = b""
            yield record


def history(path: Path) -> list[dict]:
    """Every wandb.log() call of the run, as {key: value}."""
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json)
             for item in record.history.item}
            for record in records(path) if record.WhichOneof("record_type") == "history"]
