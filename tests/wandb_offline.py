"""Read back the history rows of an offline W&B run file (`run-*.wandb`).

wandb ships no reader: the file is LevelDB-log framed — a 7-byte file header
(`:W&B`, magic 0xBEE1, version), then 32 KiB blocks of chunks, each with a 7-byte header
(crc32, little-endian length, type: 1 full, 2 first, 3 middle, 4 last). Each reassembled
payload is a `wandb_internal_pb2.Record`; history rows carry `item`s of key + JSON value.
"""

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER = 32 * 1024, 7


def records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, parts = HEADER, []
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # block trailer too short for a header: padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:
            break
        parts.append(data[pos + HEADER : pos + HEADER + length])
        pos += HEADER + length
        if kind in (1, 4):  # full or last chunk: one record complete
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def history(path: Path) -> list[dict]:
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({
                (item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in record.history.item
            })
    return rows


def run_files(root: Path) -> list[Path]:
    return sorted(Path(root).glob("**/offline-run-*/run-*.wandb"))
