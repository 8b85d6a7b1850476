"""Frame-batch shards: how the preprocessing step hands letterboxed frames to the inference step.

A shard folder (local or s3://) holds `shard-000000.npz`, ... and `manifest.json`, written last:
a folder without a manifest is incomplete and is refused. A shard holds each frame's picture
(the part of the letterbox inside the pad) as a JPEG at quality `JPEG_QUALITY`, with the
frames' indices and timestamps; the grey pad is restored exactly on reading.

JPEG was chosen by `benchmarks/shard_transport.py` (figures in docs/benchmarks.md, "Shard
transport"): quality 80 with colour at full resolution (4:4:4) stores 10.2-13.3x fewer bytes
than raw uint8 frames on its three clips, with temperature maps that correlate >= 0.9993 with
the raw-frame maps. Lossless PNG and WebP
saved only 2-3x at 10-200x the CPU; an H.264 re-encode saved 15-30x but cost 4-8x JPEG's CPU a
frame through an ffmpeg process each way. libjpeg-turbo decodes the same bytes to the same
pixels every time, so a retried step reproduces its outputs exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import cv2
import numpy as np

from gpu_analysis.engine import storage
from gpu_analysis.engine.batching import PAD_VALUE, FrameBatch, Letterbox
from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.records import from_plain

MANIFEST = "manifest.json"
FORMAT = "gpu-analysis-shards/2"
# The highest of the qualities measured that stores >= 10x fewer bytes than raw frames on every
# benchmark clip with colour at full resolution: 85 stored 8.5x fewer on the tactical-camera
# clip. (With libjpeg-turbo's default half-resolution colour, 85 reached 11.8x, but a model
# reading colour at 320x192 lost every player: see encode_jpeg.)
JPEG_QUALITY = 80
# Shards encoded or decoded ahead of the step's own work: one is enough to overlap the
# codec and the storage round trip with decoding (T4 step) or the model (A10G step).
SHARDS_AHEAD = 1


def shard_name(sequence: int) -> str:
    return f"shard-{sequence:06d}.npz"


def encode_jpeg(image_rgb: np.ndarray, geometry: Letterbox) -> bytes:
    """One letterboxed frame's picture, without its pad, as JPEG bytes."""
    g = geometry
    picture_rgb = image_rgb[g.pad_y : g.pad_y + g.resized_h, g.pad_x : g.pad_x + g.resized_w]
    ok, encoded = cv2.imencode(
        ".jpg",
        cv2.cvtColor(picture_rgb, cv2.COLOR_RGB2BGR),
        [
            cv2.IMWRITE_JPEG_QUALITY,
            JPEG_QUALITY,
            # Colour at full resolution: shirts a few pixels wide keep their colour, which the
            # team split reads (4:2:0 halved it, and a colour-threshold model lost every player).
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
        ],
    )
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {g.resized_w}x{g.resized_h} frame as JPEG")
    return encoded.tobytes()


def decode_jpeg(jpeg: np.ndarray, geometry: Letterbox, out_rgb: np.ndarray, where: str) -> None:
    """Decode one frame's JPEG picture into `out_rgb`, a pad-filled (input_h, input_w, 3)."""
    g = geometry
    picture_rgb = cv2.imdecode(jpeg, cv2.IMREAD_COLOR_RGB)
    if picture_rgb is None or picture_rgb.shape != (g.resized_h, g.resized_w, 3):
        raise UserError(
            f"{where}: a frame does not decode to a {g.resized_w}x{g.resized_h} picture; "
            "the shard is damaged, rerun the preprocess step"
        )
    out_rgb[g.pad_y : g.pad_y + g.resized_h, g.pad_x : g.pad_x + g.resized_w] = picture_rgb


def encode_shard(batch: FrameBatch) -> bytes:
    """One batch as a shard: the same batch always gives the same bytes."""
    jpegs = [encode_jpeg(image, batch.geometry) for image in batch.images_rgb]
    return storage.npz_bytes(
        {
            "jpeg_bytes": np.frombuffer(b"".join(jpegs), dtype=np.uint8),
            "jpeg_ends": np.cumsum([len(j) for j in jpegs], dtype=np.int64),
            "frame_index": batch.frame_index,
            "timestamp_s": batch.timestamp_s,
        }
    )


def write_shard(shards_uri: str, sequence: int, batch: FrameBatch) -> int:
    """Write one batch; returns the bytes written."""
    payload = encode_shard(batch)
    storage.write_bytes(storage.join(shards_uri, shard_name(sequence)), payload)
    return len(payload)


class ShardWriter:
    """Writes batches as shards 0, 1, ... in a background thread while the caller decodes.

    OpenCV's encoder and the storage writes release the GIL, so encoding a batch overlaps with
    decoding the next. At most `SHARDS_AHEAD` batches wait, so memory stays flat. An error in
    the thread is raised by the next `write` or by leaving the `with` block.
    """

    def __init__(self, shards_uri: str):
        self.shards_uri = shards_uri
        self.shards = 0
        self.bytes_written = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu-analysis-shards")
        self._pending: list[Future[int]] = []

    def write(self, batch: FrameBatch) -> None:
        self._pending.append(self._pool.submit(write_shard, self.shards_uri, self.shards, batch))
        self.shards += 1
        while len(self._pending) > SHARDS_AHEAD:
            self.bytes_written += self._pending.pop(0).result()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                while self._pending:
                    self.bytes_written += self._pending.pop(0).result()
        finally:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)


def write_manifest(shards_uri: str, manifest: dict) -> None:
    body = dict(manifest, format=FORMAT, jpeg_quality=JPEG_QUALITY)
    storage.write_bytes(
        storage.join(shards_uri, MANIFEST), json.dumps(body, indent=2, sort_keys=True).encode()
    )


def read_manifest(shards_uri: str) -> dict:
    uri = storage.join(shards_uri, MANIFEST)
    if not storage.exists(uri):
        raise UserError(f"{shards_uri}: no {MANIFEST}; the preprocess step did not finish there")
    manifest = json.loads(storage.read_bytes(uri))
    found = manifest.get("format")
    if found != FORMAT:
        raise UserError(
            f"{uri}: shards in format {found!r}, but this version reads only {FORMAT!r}; "
            "rerun the preprocess step (materialize match_frames again) to rewrite them"
        )
    return manifest


def read_shard(shards_uri: str, sequence: int, geometry: Letterbox) -> FrameBatch:
    uri = storage.join(shards_uri, shard_name(sequence))
    arrays = storage.load_npz(storage.read_bytes(uri))
    jpeg_bytes, jpeg_ends = arrays["jpeg_bytes"], arrays["jpeg_ends"]
    g = geometry
    images_rgb = np.full((len(jpeg_ends), g.input_h, g.input_w, 3), PAD_VALUE, dtype=np.uint8)
    start = 0
    for i, end in enumerate(jpeg_ends):
        decode_jpeg(jpeg_bytes[start:end], g, images_rgb[i], uri)
        start = int(end)
    return FrameBatch(
        images_rgb=images_rgb,
        frame_index=arrays["frame_index"].astype(np.int64),
        timestamp_s=arrays["timestamp_s"].astype(np.float64),
        geometry=g,
    )


def iter_shards(shards_uri: str, manifest: dict) -> Iterator[FrameBatch]:
    """The shards' batches in order; the next one is read and decoded while this one is used."""
    geometry = from_plain(Letterbox, manifest["geometry"])
    count = manifest["shards"]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu-analysis-shards") as pool:
        ahead = [
            pool.submit(read_shard, shards_uri, sequence, geometry)
            for sequence in range(min(count, 1 + SHARDS_AHEAD))
        ]
        for sequence in range(count):
            batch = ahead.pop(0).result()
            following = sequence + 1 + SHARDS_AHEAD
            if following < count:
                ahead.append(pool.submit(read_shard, shards_uri, following, geometry))
            yield batch
