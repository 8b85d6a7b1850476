"""Read and write files by URI, a local path or s3://bucket/key, with atomic local writes."""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from gpu_analysis.errors import UserError

# A fixed timestamp inside .npz archives, so the same arrays always give the same bytes.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def join(uri: str | os.PathLike, name: str) -> str:
    """`uri`/`name` for either kind of location."""
    base = str(uri)
    if is_s3(base):
        return base.rstrip("/") + "/" + name
    return str(Path(base) / name)


def _split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise UserError(f"{uri}: an s3 URI needs a bucket, like s3://bucket/prefix")
    return bucket, key


def _s3_client():
    import boto3

    # Standard boto3 configuration, AWS_ENDPOINT_URL included (moto server in tests).
    return boto3.client("s3")


def read_bytes(uri: str | os.PathLike) -> bytes:
    uri = str(uri)
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        client = _s3_client()
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            raise UserError(f"{uri}: no such object") from None
    path = Path(uri)
    if not path.is_file():
        raise UserError(f"{uri}: no such file")
    return path.read_bytes()


def download(uri: str, path: str | os.PathLike) -> None:
    """Copy an s3:// object to a local file in parts: a match video never sits in memory."""
    bucket, key = _split_s3(uri)
    client = _s3_client()
    try:
        client.download_file(bucket, key, str(path))
    except client.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            raise UserError(f"{uri}: no such object") from None
        raise


def write_bytes(uri: str | os.PathLike, payload: bytes) -> None:
    """Write atomically: readers see the old file or the whole new one, never a partial one."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        # A single PUT is atomic on S3: the object appears whole or not at all.
        _s3_client().put_object(Bucket=bucket, Key=key, Body=payload)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def exists(uri: str | os.PathLike) -> bool:
    uri = str(uri)
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        resp = _s3_client().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return any(obj["Key"] == key for obj in resp.get("Contents", []))
    return Path(uri).exists()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive (readable by np.load) whose bytes depend only on the arrays."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(
                member, np.ascontiguousarray(arrays[name]), allow_pickle=False
            )
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH), member.getvalue())
    return buf.getvalue()


def load_npz(payload: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
