"""Files and prefixes by URI, a local path or s3://bucket/key: read, write, list, fetch, move.

Writes are atomic: a reader sees the old content or the whole new one, never a part.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gpu_analysis.engine.errors import UserError, s3_refusal

# A fixed timestamp inside .npz archives, so the same arrays always give the same bytes.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def join(uri: str | os.PathLike, *names: str) -> str:
    """`uri`/`name`/... for either kind of location."""
    base = str(uri)
    if is_s3(base):
        return "/".join([base.rstrip("/"), *names])
    return str(Path(base, *names))


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise UserError(f"{uri}: an s3 URI needs a bucket, like s3://bucket/prefix")
    return bucket, key


def s3_client(
    *, region: str | None = None, endpoint: str | None = None, profile: str | None = None
) -> Any:
    """The process's one S3 client for this endpoint, region and AWS profile.

    Building a client costs more than listing a few hundred keys, and Dagster builds resources
    anew for every sensor tick and step. boto3 clients are thread-safe and refresh Pod Identity
    credentials themselves. What is not given comes from the standard boto3 configuration
    (AWS_ENDPOINT_URL for a moto server, AWS_REGION, AWS_PROFILE), read now: boto3 reads it
    only when a client is built, so it is part of the cache key.
    """
    env = os.environ
    return _cached_s3_client(
        endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
        region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        profile or env.get("AWS_PROFILE"),
    )


@functools.lru_cache(maxsize=8)
def _cached_s3_client(endpoint: str | None, region: str | None, profile: str | None) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(profile_name=profile, region_name=region)
    # Standard retries ride out S3's 503 SlowDown and brief network errors.
    retries = Config(retries={"max_attempts": 5, "mode": "standard"})
    return session.client("s3", endpoint_url=endpoint, config=retries)


def read_bytes(
    uri: str | os.PathLike, *, client: Any = None, max_bytes: int | None = None
) -> bytes:
    """The whole content; with `max_bytes`, a larger file is refused before it is read."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        client = client or s3_client()
        try:
            response = client.get_object(Bucket=bucket, Key=key)
        except client.exceptions.NoSuchKey:
            raise UserError(f"{uri}: no such object") from None
        except client.exceptions.ClientError as exc:
            refused = s3_refusal(exc, uri)
            if refused is None:
                raise
            raise refused from None
        with contextlib.closing(response["Body"]) as body:
            _check_size(uri, response["ContentLength"], max_bytes)
            return body.read()
    path = Path(uri)
    if not path.is_file():
        raise UserError(f"{uri}: no such file")
    with path.open("rb") as f:
        _check_size(uri, os.fstat(f.fileno()).st_size, max_bytes)
        return f.read()


def _check_size(uri: str, size_bytes: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size_bytes > max_bytes:
        raise UserError(
            f"{uri}: {size_bytes:,} bytes; at most {max_bytes:,} are accepted here, "
            "check that it is the right file"
        )


def write_bytes(uri: str | os.PathLike, payload: bytes, *, client: Any = None) -> None:
    """Write atomically: readers see the old file or the whole new one, never a partial one."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        # A single PUT is atomic on S3: the object appears whole or not at all.
        (client or s3_client()).put_object(Bucket=bucket, Key=key, Body=payload)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes a private file; a stored file gets the usual permissions, as open() gives.
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write (a full disk) names no file by itself
        raise


def umask() -> int:
    """The process's file mode creation mask.

    Read from /proc where it can be: the portable way sets it to read it, and for that instant
    it applies to the files other threads create.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def exists(uri: str | os.PathLike) -> bool:
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        resp = s3_client().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
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


@dataclasses.dataclass(frozen=True)
class StoredObject:
    """One file under a listed prefix; `version` changes whenever its content may have."""

    uri: str
    name: str  # relative to the listed prefix, "/"-separated
    size_bytes: int
    version: str  # the S3 ETag, or a local file's `local_version`


def local_version(stat: os.stat_result) -> str:
    """What a local file's listing version is made of: size, mtime, inode and ctime.

    ctime changes on every write and rename and, unlike mtime, cannot be set back (`touch -r`),
    so a same-size replacement that kept the old mtime still gets a new version. A version is
    a cheap signature, not a checksum: the same bytes copied again get a new one too.
    """
    return f"{stat.st_size}-{stat.st_mtime_ns}-{stat.st_ino}-{stat.st_ctime_ns}"


def _prefix_key(uri: str) -> tuple[str, str]:
    bucket, key = split_s3(uri)
    return bucket, (key.rstrip("/") + "/") if key else ""


def list_objects(prefix_uri: str, *, client: Any = None) -> list[StoredObject]:
    """Every file under `prefix_uri` (recursively), sorted by name; none if it does not exist."""
    if is_s3(prefix_uri):
        client = client or s3_client()
        bucket, prefix = _prefix_key(prefix_uri)
        found = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found.append(
                    StoredObject(
                        uri=f"s3://{bucket}/{item['Key']}",
                        name=item["Key"][len(prefix) :],
                        size_bytes=item["Size"],
                        version=item["ETag"].strip('"'),
                    )
                )
        return sorted(found, key=lambda o: o.name)
    root = Path(prefix_uri)
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for file_name in files:
            path = Path(dirpath, file_name)
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed between the walk and the stat
                continue
            found.append(
                StoredObject(
                    uri=str(path),
                    name=path.relative_to(root).as_posix(),
                    size_bytes=stat.st_size,
                    version=local_version(stat),
                )
            )
    return sorted(found, key=lambda o: o.name)


def fetch(uri: str, local_path: Path, *, client: Any = None) -> Path:
    """A local copy of `uri` at `local_path` (written whole, then renamed into place)."""
    local_path.parent.mkdir(parents=True, exist_ok=True)
    partial = local_path.with_name(local_path.name + ".partial")
    if is_s3(uri):
        client = client or s3_client()
        bucket, key = split_s3(uri)
        try:
            client.download_file(bucket, key, str(partial))
        except Exception as exc:
            _raise_user_error(exc, uri)
            raise
    else:
        if not Path(uri).is_file():
            raise UserError(f"{uri}: no such file")
        shutil.copyfile(uri, partial)
    os.replace(partial, local_path)
    return local_path


@contextlib.contextmanager
def local_copy(uri: str | os.PathLike | None, *, client: Any = None) -> Iterator[Path | None]:
    """`uri` as a local file for the duration of the block: itself when local, else a private
    temporary copy of the s3:// object, removed again on the way out (a failed download too).
    No URI gives None, for optional inputs."""
    if uri is None or not is_s3(uri):
        yield None if uri is None else Path(uri)
        return
    uri = str(uri)
    with tempfile.TemporaryDirectory(prefix="gpu-analysis-input-") as scratch:
        name = Path(split_s3(uri)[1]).name or "object"
        yield fetch(uri, Path(scratch) / name, client=client)


def _raise_user_error(exc: Exception, uri: str) -> None:
    """A missing or refused S3 object as the one-line UserError that names it; else nothing
    (the caller re-raises: throttling and outages are for the retries to handle)."""
    if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey"):
        raise UserError(f"{uri}: no such object") from None
    refused = s3_refusal(exc, uri)
    if refused is not None:
        raise refused from None


def copy_file(source_uri: str, target_uri: str, *, client: Any = None) -> None:
    """Copy one file within one kind of storage; the target appears whole or not at all."""
    if is_s3(source_uri) != is_s3(target_uri):
        raise ValueError(f"cannot copy {source_uri} to {target_uri}: different kinds of storage")
    if is_s3(source_uri):
        client = client or s3_client()
        bucket, key = split_s3(source_uri)
        target_bucket, target_key = split_s3(target_uri)
        try:
            # Managed copy: server side, multipart above 8 MB, so a 5 GB+ match copies too.
            client.copy({"Bucket": bucket, "Key": key}, target_bucket, target_key)
        except Exception as exc:
            _raise_user_error(exc, source_uri)
            raise
        return
    if not Path(source_uri).is_file():
        raise UserError(f"{source_uri}: no such file")
    put_file(Path(source_uri), target_uri)


def put_file(local_path: Path, uri: str, *, client: Any = None) -> None:
    """Store one file; readers see the old content or the whole new one, never a part."""
    if is_s3(uri):
        client = client or s3_client()
        bucket, key = split_s3(uri)
        client.upload_file(str(local_path), bucket, key)
        return
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(local_path, partial)
    os.replace(partial, target)


def remove_prefix(prefix_uri: str, *, client: Any = None) -> None:
    if is_s3(prefix_uri):
        client = client or s3_client()
        bucket, _ = split_s3(prefix_uri)
        keys = [split_s3(o.uri)[1] for o in list_objects(prefix_uri, client=client)]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        return
    shutil.rmtree(prefix_uri, ignore_errors=True)


def remove_file(uri: str, *, client: Any = None) -> None:
    if is_s3(uri):
        client = client or s3_client()
        bucket, key = split_s3(uri)
        client.delete_object(Bucket=bucket, Key=key)
        return
    Path(uri).unlink(missing_ok=True)


def replace_prefix(source_uri: str, target_uri: str, *, client: Any = None) -> None:
    """Put everything under `source_uri` in place of `target_uri`, then drop the source.

    Steps write into a scratch prefix and call this last, so a killed attempt leaves at most
    a scratch prefix that the next attempt clears; the target only ever holds a finished set.
    """
    if is_s3(source_uri) != is_s3(target_uri):
        raise ValueError(f"cannot move {source_uri} to {target_uri}: different kinds of storage")
    if not is_s3(source_uri):
        remove_prefix(target_uri)
        Path(target_uri).parent.mkdir(parents=True, exist_ok=True)
        os.replace(source_uri, target_uri)
        return
    client = client or s3_client()
    remove_prefix(target_uri, client=client)
    target_bucket, target_key = _prefix_key(target_uri)
    for item in list_objects(source_uri, client=client):
        bucket, key = split_s3(item.uri)
        client.copy({"Bucket": bucket, "Key": key}, target_bucket, target_key + item.name)
    remove_prefix(source_uri, client=client)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
