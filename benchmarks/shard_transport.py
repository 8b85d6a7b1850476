"""Shard transport: bytes, codec cost, step time and map agreement of frame encodings for shards.

For each of three clips (the 1080p benchmark clip, a tactical-camera clip and a clip in a
noisy randomized look), one run measures:

- codecs, on the same letterboxed frames: bytes a frame and encode / decode ms a frame (in
  memory, no storage), each as a ratio to raw uint8 `.npz` shards (the format before this
  one, reproduced here since the engine no longer has it), and the correlation of the overall
  temperature map (`steps.infer` + `steps.aggregate`, built-in model) with the raw-shard map;
- steps: `steps.preprocess` and `steps.infer` per frame with the shipped shards against the
  same functions with raw shards written and read in turn (today's loop), alternating, best of
  `ROUNDS`; and the fused `steps.analyze` (raw frames, no shards) as the maps' reference.

    .venv/bin/python benchmarks/shard_transport.py            # about 3 minutes on 2 cores
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.engine_clips import CACHE, match_clip  # noqa: E402
from gpu_analysis.engine import shards, steps, storage  # noqa: E402
from gpu_analysis.engine.batching import FrameBatch, Letterbox  # noqa: E402
from gpu_analysis.engine.records import from_plain  # noqa: E402
from gpu_analysis.synthetic import ffmpeg_exe, generate_match_clip, random_look  # noqa: E402
from gpu_analysis.synthetic.scoring import map_correlation  # noqa: E402

MODEL = "builtin"
SAMPLE_FPS = 5.0
ROUNDS = 3
# WebP lossless takes about 0.3 s a frame here: timed on the first shard only.
WEBP_FRAMES = 8


@dataclass(frozen=True)
class Codec:
    name: str
    encode: Callable[[FrameBatch], bytes]
    decode: Callable[[bytes, Letterbox], FrameBatch]
    lossless: bool = False
    max_frames: int | None = None  # too slow for every frame: timed on this many


def _with_frames(images_rgb: np.ndarray, arrays: dict, geometry: Letterbox) -> FrameBatch:
    return FrameBatch(
        images_rgb=images_rgb,
        frame_index=arrays["frame_index"].astype(np.int64),
        timestamp_s=arrays["timestamp_s"].astype(np.float64),
        geometry=geometry,
    )


def _npz(batch: FrameBatch, **arrays: np.ndarray) -> bytes:
    return storage.npz_bytes(
        {**arrays, "frame_index": batch.frame_index, "timestamp_s": batch.timestamp_s}
    )


def raw_encode(batch: FrameBatch) -> bytes:
    """Shard format 1, as it was: the uint8 frames as they are."""
    return _npz(batch, images_rgb=batch.images_rgb)


def raw_decode(payload: bytes, geometry: Letterbox) -> FrameBatch:
    arrays = storage.load_npz(payload)
    return _with_frames(arrays["images_rgb"], arrays, geometry)


def shipped_decode(payload: bytes, geometry: Letterbox) -> FrameBatch:
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, shards.shard_name(0)).write_bytes(payload)
        return shards.read_shard(folder, 0, geometry)


@contextlib.contextmanager
def jpeg_quality(quality: int):
    saved = shards.JPEG_QUALITY
    shards.JPEG_QUALITY = quality
    try:
        yield
    finally:
        shards.JPEG_QUALITY = saved


def jpeg_codec(quality: int) -> Codec:
    def encode(batch: FrameBatch) -> bytes:
        with jpeg_quality(quality):
            return shards.encode_shard(batch)

    shipped = " (shipped)" if quality == shards.JPEG_QUALITY else ""
    return Codec(f"JPEG q{quality}{shipped}", encode, shipped_decode)


def image_codec(name: str, ext: str, params: list[int], max_frames: int | None = None) -> Codec:
    def encode(batch: FrameBatch) -> bytes:
        blobs = [cv2.imencode(ext, img[..., ::-1], params)[1].tobytes() for img in batch.images_rgb]
        return _npz(
            batch,
            blobs=np.frombuffer(b"".join(blobs), np.uint8),
            ends=np.cumsum([len(b) for b in blobs]),
        )

    def decode(payload: bytes, geometry: Letterbox) -> FrameBatch:
        arrays = storage.load_npz(payload)
        starts = np.concatenate([[0], arrays["ends"][:-1]])
        images = np.stack(
            [
                cv2.imdecode(arrays["blobs"][s:e], cv2.IMREAD_COLOR_RGB)
                for s, e in zip(starts, arrays["ends"], strict=True)
            ]
        )
        return _with_frames(images, arrays, geometry)

    return Codec(name, encode, decode, lossless=True, max_frames=max_frames)


def h264_codec(crf: int) -> Codec:
    """A low-latency H.264 re-encode of each shard's frames through ffmpeg, one thread each way
    so that the same frames always give the same bytes and pixels."""
    ffmpeg = ffmpeg_exe()

    def encode(batch: FrameBatch) -> bytes:
        h, w = batch.images_rgb.shape[1:3]
        stream = subprocess.run(
            [ffmpeg, "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
             "-r", "5", "-i", "-", "-c:v", "libx264", "-preset", "ultrafast",
             "-tune", "zerolatency", "-crf", str(crf), "-threads", "1", "-pix_fmt", "yuv420p",
             "-f", "h264", "-"],
            input=batch.images_rgb.tobytes(), capture_output=True, check=True,
        ).stdout  # fmt: skip
        return _npz(batch, h264=np.frombuffer(stream, np.uint8))

    def decode(payload: bytes, geometry: Letterbox) -> FrameBatch:
        arrays = storage.load_npz(payload)
        pixels = subprocess.run(
            [ffmpeg, "-v", "error", "-threads", "1", "-f", "h264", "-i", "-",
             "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
            input=arrays["h264"].tobytes(), capture_output=True, check=True,
        ).stdout  # fmt: skip
        images = np.frombuffer(pixels, np.uint8).reshape(-1, geometry.input_h, geometry.input_w, 3)
        return _with_frames(images, arrays, geometry)

    return Codec(f"H.264 ultrafast CRF {crf}", encode, decode)


CODECS = (
    Codec("raw uint8 .npz (format 1)", raw_encode, raw_decode, lossless=True),
    jpeg_codec(80),
    jpeg_codec(85),
    jpeg_codec(90),
    jpeg_codec(95),
    image_codec("PNG level 1 (lossless)", ".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]),
    image_codec("WebP lossless", ".webp", [cv2.IMWRITE_WEBP_QUALITY, 101], max_frames=WEBP_FRAMES),
    h264_codec(18),
)


class SerialWriter:
    """Today's preprocess loop: each batch encoded and written in turn, in the step's thread."""

    def __init__(self, shards_uri: str, encode: Callable[[FrameBatch], bytes] = raw_encode):
        self.shards_uri, self.encode = shards_uri, encode
        self.shards = self.bytes_written = 0

    def write(self, batch: FrameBatch) -> None:
        payload = self.encode(batch)
        storage.write_bytes(storage.join(self.shards_uri, shards.shard_name(self.shards)), payload)
        self.shards += 1
        self.bytes_written += len(payload)

    def __enter__(self) -> SerialWriter:
        return self

    def __exit__(self, *exc) -> None:
        pass


def serial_reader(decode: Callable[[bytes, Letterbox], FrameBatch]):
    """Today's infer loop: each shard read and decoded in turn, in the step's thread."""

    def iter_shards(shards_uri: str, manifest: dict):
        geometry = from_plain(Letterbox, manifest["geometry"])
        for sequence in range(manifest["shards"]):
            uri = storage.join(shards_uri, shards.shard_name(sequence))
            yield decode(storage.read_bytes(uri), geometry)

    return iter_shards


@contextlib.contextmanager
def transport(codec: Codec):
    """`steps.preprocess` and `steps.infer` as they are, with shards in `codec`, serially."""
    saved = shards.ShardWriter, shards.iter_shards
    shards.ShardWriter = lambda uri: SerialWriter(uri, codec.encode)
    shards.iter_shards = serial_reader(codec.decode)
    try:
        yield
    finally:
        shards.ShardWriter, shards.iter_shards = saved


def overall_map(shards_uri: str, video: Path, calibration: Path, work: Path, name: str):
    """The overall temperature map from `steps.infer` and `steps.aggregate` on these shards."""
    steps.infer(shards_uri, str(work / f"det-{name}"), model=MODEL, calibration_path=calibration)
    facts = steps.probe(video)
    steps.aggregate(str(work / f"det-{name}"), calibration, work / f"out-{name}", video_facts=facts)
    return np.load(work / f"out-{name}" / "temperature_map.npy")


def bench_clip(label: str, video: Path, calibration: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        raw_uri, new_uri = str(work / "raw"), str(work / "new")
        pre_ms = {"raw": [], "new": []}
        infer_ms = {"raw": [], "new": []}
        for _ in range(ROUNDS):  # alternating, so a burst of outside load hits both
            with transport(CODECS[0]):
                pre = steps.preprocess(str(video), raw_uri, sample_fps=SAMPLE_FPS, model=MODEL)
            pre_ms["raw"].append(1000 * pre.total_s / pre.sampled_frames)
            new = steps.preprocess(str(video), new_uri, sample_fps=SAMPLE_FPS, model=MODEL)
            pre_ms["new"].append(1000 * new.total_s / new.sampled_frames)
            for kind, uri in (("raw", raw_uri), ("new", new_uri)):
                with transport(CODECS[0]) if kind == "raw" else contextlib.nullcontext():
                    started = time.perf_counter()
                    steps.infer(uri, str(work / "det"), model=MODEL, calibration_path=calibration)
                    seconds = time.perf_counter() - started
                infer_ms[kind].append(1000 * seconds / new.sampled_frames)
        frames = new.sampled_frames
        fused_dir = work / "fused"
        steps.analyze(video, calibration, fused_dir, sample_fps=SAMPLE_FPS, model=MODEL)
        fused_map = np.load(fused_dir / "temperature_map.npy")
        with transport(CODECS[0]):
            raw_map = overall_map(raw_uri, video, calibration, work, "raw")
            batches = list(shards.iter_shards(raw_uri, shards.read_manifest(raw_uri)))
        shipped_map = overall_map(new_uri, video, calibration, work, "new")
        geometry = batches[0].geometry
        manifest = shards.read_manifest(raw_uri)

        rows = []
        for codec in CODECS:
            use = batches if codec.max_frames is None else batches[: codec.max_frames // 8]
            n = sum(len(b) for b in use)
            started = time.perf_counter()
            payloads = [codec.encode(b) for b in use]
            encode_ms = 1000 * (time.perf_counter() - started) / n
            started = time.perf_counter()
            decoded = [codec.decode(p, geometry) for p in payloads]
            decode_ms = 1000 * (time.perf_counter() - started) / n
            same_pixels = all(
                np.array_equal(d.images_rgb, b.images_rgb)
                for d, b in zip(decoded, use, strict=True)
            )
            if codec.lossless:
                if not same_pixels:
                    raise AssertionError(f"{codec.name} is not lossless here")
                corr = 1.0 if codec is CODECS[0] else float("nan")  # same pixels, same map
            else:
                folder = work / f"codec-{len(rows)}"
                folder.mkdir()
                for sequence, payload in enumerate(payloads):
                    (folder / shards.shard_name(sequence)).write_bytes(payload)
                shards.write_manifest(str(folder), manifest)
                with transport(codec):
                    corr = map_correlation(
                        raw_map, overall_map(str(folder), video, calibration, work, str(len(rows)))
                    )
            rows.append((codec, n, sum(map(len, payloads)) / n, encode_ms, decode_ms, corr))
    return {
        "label": label,
        "frames": frames,
        "input": new.input_size,
        "new_bytes_per_frame": new.bytes_per_frame,
        "raw_bytes_per_frame": pre.bytes_per_frame,
        "pre_ms": {k: min(v) for k, v in pre_ms.items()},
        "infer_ms": {k: min(v) for k, v in infer_ms.items()},
        "fused_vs_raw": map_correlation(fused_map, raw_map),
        "fused_identical": bool(np.array_equal(fused_map, raw_map)),
        "shipped_vs_fused": map_correlation(shipped_map, fused_map),
        "rows": rows,
    }


def other_clip(name: str, seed: int, camera: str, look) -> tuple[Path, Path]:
    video = CACHE / f"shards_{name}_1280x720_10s.mp4"
    calibration = video.with_name(video.stem + ".calibration.json")
    if not (video.is_file() and calibration.is_file()):
        generate_match_clip(
            video, seed=seed, duration_s=10.0, fps=25.0, width=1280, height=720,
            camera=camera, look=look,
        )  # fmt: skip
    return video, calibration


def report(result: dict) -> None:
    w, h = result["input"]
    print(f"\n== {result['label']}: {result['frames']} frames at {w}x{h} ==")
    print(
        f"{'codec':27s} {'bytes/frame':>11s} {'smaller':>8s} {'enc ms':>7s} {'x raw':>6s} "
        f"{'dec ms':>7s} {'x raw':>6s} {'map corr vs raw':>16s}"
    )
    raw = result["rows"][0]
    for codec, n, size, enc, dec, corr in result["rows"]:
        lossless = codec.lossless and codec is not raw[0]
        corr_text = "1 (pixels equal)" if lossless else f"{corr:.5f}"
        frames = "" if codec.max_frames is None else f" [{n} frames]"
        print(
            f"{codec.name + frames:27s} {size:11,.0f} {raw[2] / size:7.1f}x {enc:7.2f} "
            f"{enc / raw[3]:6.1f} {dec:7.2f} {dec / raw[4]:6.1f} {corr_text:>16s}"
        )
    pre, inf = result["pre_ms"], result["infer_ms"]
    print(
        f"steps, shipped shards vs raw (best of {ROUNDS}, ms a frame): "
        f"preprocess {pre['new']:.1f} vs {pre['raw']:.1f} ({pre['new'] / pre['raw']:.2f}x), "
        f"infer {inf['new']:.1f} vs {inf['raw']:.1f} ({inf['new'] / inf['raw']:.2f}x)"
    )
    print(
        f"preprocess summary: {result['new_bytes_per_frame']:,.0f} vs "
        f"{result['raw_bytes_per_frame']:,.0f} bytes a frame "
        f"({result['raw_bytes_per_frame'] / result['new_bytes_per_frame']:.1f}x fewer)"
    )
    print(
        f"reference: fused analyze vs raw-shard split steps: corr {result['fused_vs_raw']:.5f}, "
        f"maps identical: {result['fused_identical']}; "
        f"shipped split steps vs fused analyze: corr {result['shipped_vs_fused']:.5f}"
    )


def main() -> int:
    print(f"load average before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores")
    started = time.perf_counter()
    clips = [
        ("1080p broadcast, default look, 20 s", *match_clip(1920, 1080, 20.0)),
        ("720p tactical, seed 11, 10 s", *other_clip("tactical", 11, "tactical", None)),
        (
            "720p broadcast, random look seed 10 (noise 6.4, CRF 22), 10 s",
            *other_clip("noisy", 10, "broadcast", random_look(np.random.default_rng([10, 2]))),
        ),
    ]
    for label, video, calibration in clips:
        report(bench_clip(label, video, calibration))
    print(
        f"\nload average after: {os.getloadavg()[0]:.2f}; "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
