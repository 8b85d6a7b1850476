"""Is an MP4 file whole? A copy that stalled or was cut short must not be analysed as a match.

Two cheap checks, neither decodes a picture:
- the top-level boxes (ftyp, moov, mdat, ...) tile the file exactly, so a cut inside a box shows;
- every video packet that the container's index announces can be read, front to back, so a
  cut between boxes (a faststart file without its media data, a file without its index) shows.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2

# Imported for its side effect: it silences OpenCV's and FFmpeg's own stderr complaints, which
# a truncated file causes by design here.
from gpu_analysis.engine import video as _quiet_opencv  # noqa: F401

_BOX_HEADER = struct.Struct(">I4s")
_LARGE_SIZE = struct.Struct(">Q")


def incomplete_mp4_reason(path: str | os.PathLike) -> str | None:
    """None when `path` is a whole MP4 whose indexed video packets all read, else why not."""
    path = Path(path)
    return _box_layout_problem(path) or _packet_problem(path)


def _box_layout_problem(path: Path) -> str | None:
    size_bytes = path.stat().st_size
    if size_bytes == 0:
        return "the file is empty"
    offset = 0
    with path.open("rb") as f:
        while offset < size_bytes:
            f.seek(offset)
            header = f.read(16)
            if len(header) < _BOX_HEADER.size:
                return f"the file ends inside a box header at byte {offset}"
            box_bytes, kind = _BOX_HEADER.unpack_from(header)
            name = kind.decode("latin-1")
            if offset == 0 and name != "ftyp":
                # Not an ISO media file (an MKV named .mp4, say): its layout is not ours to
                # judge; the packet check still applies.
                return None
            if box_bytes == 0:  # "to the end of the file": nothing more to check
                return None
            if box_bytes == 1:  # a 64-bit size follows the type
                if len(header) < 16:
                    return f"the file ends inside the header of box {name!r} at byte {offset}"
                box_bytes = _LARGE_SIZE.unpack_from(header, 8)[0]
            if box_bytes < _BOX_HEADER.size:
                return f"box {name!r} at byte {offset} has an impossible size {box_bytes}"
            if offset + box_bytes > size_bytes:
                return (
                    f"box {name!r} at byte {offset} needs {box_bytes} bytes but the file has "
                    f"{size_bytes - offset} left"
                )
            offset += box_bytes
    return None


def _packet_problem(path: Path) -> str | None:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            return "the container cannot be opened (no index, or not a video file)"
        announced = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        # Raw mode: grab() hands back the encoded packet without decoding it, so this reads
        # the file front to back at the cost of its I/O.
        cap.set(cv2.CAP_PROP_FORMAT, -1)
        read = 0
        while cap.grab():
            read += 1
    finally:
        cap.release()
    if read == 0:
        return "no video packet can be read"
    if read < announced:
        return f"only {read} of the {announced} video packets its index announces can be read"
    return None
