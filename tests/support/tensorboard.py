"""Reading tensorboard event files: what fairseq-train logged, by tag and update."""

from __future__ import annotations

import struct
from pathlib import Path

from tensorboardX.proto.event_pb2 import Event
from tensorboardX.record_writer import masked_crc32c


def scalars(logdir: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} over every event file under ``logdir``."""
    out: dict[str, dict[int, float]] = {}
    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert files, f"no event file in {logdir}"
    for path in files:
        for event in read_events(path):
            for value in event.summary.value:
                if value.WhichOneof("value") == "simple_value":
                    out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


def read_events(path: Path) -> list[Event]:
    """Every record of a TFRecord event file, its length and data checked against their CRCs."""
    events, data = [], path.read_bytes()
    pos = 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked_crc32c(header), f"{path}: bad length CRC"
        body = data[pos + 12:pos + 12 + length]
        assert struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] == masked_crc32c(body), \
            f"{path}: bad record CRC"
        events.append(Event.FromString(body))
        pos += 16 + length
    return events
