"""One rendered match, encoded the ways people's videos come: real files made by ffmpeg.

Every variant is cut from one 50 fps master rendered near-lossless, so each shows the same
match at the same instants as the progressive 25 fps H.264 original: a variant decoded right
gives the original's sampled frames, and an analysis of it the original's map.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np

from gpu_analysis.synthetic import calibration_path_for, generate_match_clip
from gpu_analysis.synthetic.clip import H264Writer
from gpu_analysis.synthetic.look import default_look

# 640x360 is the built-in model's scale: its 768x432 input sees players as a 1280x720 clip's.
WIDTH, HEIGHT = 640, 360
DURATION_S = 4.0
MASTER_FPS = 50
ORIGINAL_FPS = 25

# Frames of the master to keep (select filter, n = master frame number, t = seconds), each
# keeping its own timestamp: 50 fps for the first third, 10 fps for the second, 25 fps after.
# A phone slows its frame rate the same way when the light drops. Every 0.2 s instant of the
# default 5 fps sampling still has a frame.
VFR_SELECT = "if(lt(t,1.34),1,if(lt(t,2.68),not(mod(n,5)),not(mod(n,2))))"

# Fast encoder settings at high quality: the detector's answer moves with codec artefacts, so
# near-lossless files keep what the comparison with the original measures to the decoding.
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "8", "-pix_fmt", "yuv420p"]
# MPEG-2's default matrices quantise the grass's fine texture hard even at its best quantiser;
# flat ones keep it, as they keep the others' files near-lossless.
FLAT_8 = ",".join(["8"] * 64)
FLAT_16 = ",".join(["16"] * 64)
EVERY_OTHER_FRAME = f"select=not(mod(n\\,2)),setpts=N/({ORIGINAL_FPS}*TB)"


@dataclasses.dataclass(frozen=True)
class Variant:
    """A file of the rendered match: how it was made and what decoding it must give."""

    path: Path
    codec: str  # as VideoFacts.codec names it
    fps: float  # the average rate its facts should say
    interlaced: bool = False
    rotation_deg: int = 0
    stream_index: int = 0  # the stream that holds the match


def ffmpeg(*args: str | Path) -> None:
    """The ffmpeg imageio-ffmpeg ships, not the system's: its encoders (libx265, libvpx-vp9,
    libsvtav1, libxavs2) are known, where a distribution's build may lack some."""
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", *map(str, args)],
        check=True,
        capture_output=True,
    )


def render_master(folder: Path) -> Path:
    """The match at 50 fps, H.264 at CRF 10 (near-lossless), each frame stamped with its
    number (see `stamp`), its calibration beside it."""
    rendered = folder / "rendered50.mp4"
    look = dataclasses.replace(default_look(), crf=10)
    generate_match_clip(
        rendered, seed=7, duration_s=DURATION_S, fps=MASTER_FPS, width=WIDTH, height=HEIGHT,
        look=look,
    )  # fmt: skip
    master = folder / "master50.mp4"
    with av.open(str(rendered)) as source, H264Writer(master, WIDTH, HEIGHT, MASTER_FPS, 10) as out:
        for number, frame in enumerate(source.decode(video=0)):
            out.write(stamp(frame.to_ndarray(format="rgb24"), number))
    calibration_path_for(master).write_text(calibration_path_for(rendered).read_text())
    return master


# The master frame number, as STAMP_BITS blocks of STAMP_BLOCK_PX square in the top-left corner
# (above the pitch in the tactical view), white for 1 and black for 0, most significant first:
# big enough to survive every codec here, so a decoded frame says which instant it shows.
STAMP_BITS = 8
STAMP_BLOCK_PX = 16


def stamp(image: np.ndarray, number: int) -> np.ndarray:
    image = image.copy()
    for bit in range(STAMP_BITS):
        on = (number >> (STAMP_BITS - 1 - bit)) & 1
        x = bit * STAMP_BLOCK_PX
        image[:STAMP_BLOCK_PX, x : x + STAMP_BLOCK_PX] = 235 if on else 16
    return image


def read_stamp(image: np.ndarray) -> int:
    """The master frame number a decoded (upright) frame carries; any channel order."""
    number = 0
    quarter = STAMP_BLOCK_PX // 4
    for bit in range(STAMP_BITS):
        x = bit * STAMP_BLOCK_PX
        block = image[
            quarter : STAMP_BLOCK_PX - quarter, x + quarter : x + STAMP_BLOCK_PX - quarter
        ]
        number = (number << 1) | int(block.mean() > 128)
    return number


def make_variants(master: Path, folder: Path) -> dict[str, Variant]:
    """The original (progressive, 25 fps, H.264 MP4) and every variant, by name."""
    made: dict[str, Variant] = {}

    def add(name: str, filename: str, codec: str, fps: float, *args: str | Path, **kw) -> None:
        path = folder / filename
        ffmpeg("-i", master, *args, path)
        made[name] = Variant(path, codec, fps, **kw)

    add("original", "original.mp4", "h264", 25, "-vf", EVERY_OTHER_FRAME, "-r", "25", *X264)
    # Field pairs woven from consecutive master frames (top field first): real interlaced
    # content, 50 fields a second, encoded field-aware as a camcorder does.
    add(
        "interlaced", "interlaced.mp4", "h264", 25,
        "-vf", "tinterlace=mode=interleave_top,setfield=tff",
        *X264, "-flags", "+ilme+ildct", "-x264-params", "tff=1", interlaced=True,
    )  # fmt: skip
    add(
        "vfr", "vfr.mp4", "h264", 0.0,  # the average: set below from what was kept
        "-vf", f"select='{VFR_SELECT}'", "-fps_mode", "passthrough", *X264,
    )  # fmt: skip
    add(
        "hevc", "hevc.mp4", "hevc", 25, "-vf", EVERY_OTHER_FRAME, "-r", "25",
        "-c:v", "libx265", "-preset", "ultrafast", "-crf", "8", "-tag:v", "hvc1",
        "-x265-params", "log-level=none", "-pix_fmt", "yuv420p",
    )  # fmt: skip
    add(
        "vp9", "vp9.webm", "vp9", 25, "-vf", EVERY_OTHER_FRAME, "-r", "25",
        "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-crf", "8",
        "-b:v", "0", "-pix_fmt", "yuv420p",
    )  # fmt: skip
    add(
        "av1", "av1.mp4", "av1", 25, "-vf", EVERY_OTHER_FRAME, "-r", "25",
        "-c:v", "libsvtav1", "-preset", "12", "-crf", "8", "-svtav1-params", "log-level=0",
        "-pix_fmt", "yuv420p",
    )  # fmt: skip
    add(
        "mpeg2_ts", "mpeg2.ts", "mpeg2video", 25, "-vf", EVERY_OTHER_FRAME, "-r", "25",
        "-c:v", "mpeg2video", "-q:v", "1", "-intra_matrix", FLAT_8, "-inter_matrix", FLAT_16,
        "-pix_fmt", "yuv420p", "-f", "mpegts",
    )  # fmt: skip
    add("fps50", "fps50.mp4", "h264", 50, *X264)
    add("fps29_97", "fps29_97.mp4", "h264", 30000 / 1001, "-vf", "fps=30000/1001", *X264)

    # A phone held upright stores its picture sideways with a display matrix that turns it
    # back: store the original turned a quarter clockwise, then say "turn it counter-clockwise".
    sideways = folder / "sideways.mp4"
    ffmpeg("-i", made["original"].path, "-vf", "transpose=clock", *X264, sideways)
    rotated = folder / "rotated.mp4"
    ffmpeg("-display_rotation:v:0", "90", "-i", sideways, "-c", "copy", rotated)
    made["rotated"] = Variant(rotated, "h264", 25, rotation_deg=90)

    # Two video streams, the match second: a test card first (not marked default), the match
    # marked default, as a recorder with a preview track or an edit with a spare angle writes.
    card = folder / "card.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=s={WIDTH}x{HEIGHT}:r=25:d={DURATION_S}", *X264, card,
    )  # fmt: skip
    two = folder / "two_streams.mp4"
    ffmpeg(
        "-i", card, "-i", made["original"].path, "-map", "0:v", "-map", "1:v", "-c", "copy",
        "-disposition:v:0", "0", "-disposition:v:1", "default", two,
    )  # fmt: skip
    made["two_streams"] = Variant(two, "h264", 25, stream_index=1)

    kept = sum(1 for _ in _vfr_kept_frames())
    made["vfr"] = dataclasses.replace(made["vfr"], fps=kept / DURATION_S)
    calibration = calibration_path_for(master).read_text()
    for variant in made.values():
        calibration_path_for(variant.path).write_text(calibration)
    return made


def _vfr_kept_frames():
    """Master frame numbers VFR_SELECT keeps (the same rule, in Python)."""
    for n in range(round(DURATION_S * MASTER_FPS)):
        t = n / MASTER_FPS
        if t < 1.34 or (t < 2.68 and n % 5 == 0) or (t >= 2.68 and n % 2 == 0):
            yield n


def make_undecodable(folder: Path) -> Path:
    """An AVS2 transport stream: ffmpeg can encode it (libxavs2), PyAV's FFmpeg cannot decode it."""
    path = folder / "avs2.ts"
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=s={WIDTH}x{HEIGHT}:r=25:d=1", "-c:v", "libxavs2",
        "-pix_fmt", "yuv420p", "-f", "mpegts", path,
    )  # fmt: skip
    return path


def make_audio_first(folder: Path) -> Path:
    """A file whose stream 0 is audio and stream 1 the video, as some recorders write them."""
    path = folder / "audio_first.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=s={WIDTH}x{HEIGHT}:r=25:d=1", "-f", "lavfi", "-i",
        "sine=d=1", "-map", "1:a", "-map", "0:v", *X264, "-c:a", "aac", path,
    )  # fmt: skip
    return path
