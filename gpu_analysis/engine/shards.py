"""Frame-batch shards: how the preprocessing step hands letterboxed frames to the inference step.

A shard folder (local or s3://) holds `shard-000000.npz`, ... (uint8 RGB frames at the model
input size with their frame indices and timestamps) and `manifest.json`, written last: a folder
without a manifest is incomplete and is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np

from gpu_analysis.engine import storage
from gpu_analysis.engine.batching import FrameBatch, Letterbox
from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.records import from_plain

MANIFEST = "manifest.json"
FORMAT = "gpu-analysis-shards/1"


def shard_name(sequence: int) -> str:
    return f"shard-{sequence:06d}.npz"


def write_shard(shards_uri: str, sequence: int, batch: FrameBatch) -> int:
    """Write one batch; returns the bytes written."""
    payload = storage.npz_bytes(
        {
            "images_rgb": batch.images_rgb,
            "frame_index": batch.frame_index,
            "timestamp_s": batch.timestamp_s,
        }
    )
    storage.write_bytes(storage.join(shards_uri, shard_name(sequence)), payload)
    return len(payload)


def write_manifest(shards_uri: str, manifest: dict) -> None:
    body = dict(manifest, format=FORMAT)
    storage.write_bytes(
        storage.join(shards_uri, MANIFEST), json.dumps(body, indent=2, sort_keys=True).encode()
    )


def read_manifest(shards_uri: str) -> dict:
    uri = storage.join(shards_uri, MANIFEST)
    if not storage.exists(uri):
        raise UserError(f"{shards_uri}: no {MANIFEST}; the preprocess step did not finish there")
    manifest = json.loads(storage.read_bytes(uri))
    if manifest.get("format") != FORMAT:
        raise UserError(f"{uri}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def iter_shards(shards_uri: str, manifest: dict) -> Iterator[FrameBatch]:
    geometry = from_plain(Letterbox, manifest["geometry"])
    for sequence in range(manifest["shards"]):
        arrays = storage.load_npz(
            storage.read_bytes(storage.join(shards_uri, shard_name(sequence)))
        )
        yield FrameBatch(
            images_rgb=arrays["images_rgb"],
            frame_index=arrays["frame_index"].astype(np.int64),
            timestamp_s=arrays["timestamp_s"].astype(np.float64),
            geometry=geometry,
        )
