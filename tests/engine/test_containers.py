"""`containers.incomplete_mp4_reason`: a whole MP4 passes, an MP4 cut anywhere does not."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from gpu_analysis.engine.containers import incomplete_mp4_reason
from gpu_analysis.synthetic import ffmpeg_exe, generate_match_clip


def top_level_boxes(payload: bytes) -> list[tuple[str, int, int]]:
    """(type, offset, size) of each top-level box of a whole file with 32-bit box sizes."""
    boxes, offset = [], 0
    while offset < len(payload):
        size, kind = struct.unpack_from(">I4s", payload, offset)
        boxes.append((kind.decode(), offset, size))
        offset += size
    return boxes


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One clip as ffmpeg writes it: index first (faststart), and index last."""
    folder = tmp_path_factory.mktemp("containers")
    faststart, index_last = folder / "faststart.mp4", folder / "index_last.mp4"
    generate_match_clip(faststart, seed=5, duration_s=1.0, fps=25.0, width=320, height=180)
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(faststart), "-c", "copy", str(index_last)],
        check=True,
    )
    return {"faststart": faststart.read_bytes(), "index-last": index_last.read_bytes()}


def reason(tmp_path: Path, payload: bytes) -> str | None:
    path = tmp_path / "video.mp4"
    path.write_bytes(payload)
    return incomplete_mp4_reason(path)


@pytest.mark.parametrize("layout", ["faststart", "index-last"])
def test_whole_file_passes_and_every_cut_is_caught(tmp_path, layouts, layout):
    whole = layouts[layout]
    assert reason(tmp_path, whole) is None
    cuts = {len(whole) * share // 20 for share in range(1, 20)}  # every 5 %
    cuts |= {offset for _kind, offset, _size in top_level_boxes(whole)[1:]}  # box boundaries
    cuts |= {len(whole) - 1, len(whole) - 25}  # the last bytes only
    for cut in sorted(cuts):
        assert reason(tmp_path, whole[:cut]), f"cut at byte {cut} of {len(whole)} passed"


def test_64_bit_box_sizes_are_read(tmp_path, layouts):
    """ffmpeg leaves an 8-byte `free` box before mdat to grow it to a 64-bit size later."""
    whole = layouts["index-last"]
    boxes = top_level_boxes(whole)
    kinds = [kind for kind, _offset, _size in boxes]
    free_at = kinds.index("free")
    assert kinds[free_at + 1] == "mdat" and boxes[free_at][2] == 8
    _, offset, mdat_bytes = boxes[free_at + 1]
    # free (8) + mdat header (8) become one mdat header with a 64-bit size (16): the media
    # data stays where the index says it is.
    large = struct.pack(">I4sQ", 1, b"mdat", mdat_bytes + 8)
    rewritten = whole[: offset - 8] + large + whole[offset + 8 :]
    assert len(rewritten) == len(whole)
    assert reason(tmp_path, rewritten) is None
    assert "box 'mdat'" in reason(tmp_path, rewritten[: offset + 100])  # cut in the media data


def test_empty_and_foreign_files_are_not_whole_mp4s(tmp_path):
    assert reason(tmp_path, b"") == "the file is empty"
    assert reason(tmp_path, b"\x1aE\xdf\xa3 not an mp4 at all" * 50)  # an MKV header, then junk
