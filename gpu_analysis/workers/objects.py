"""Whole prefixes of stored files, a local folder or an s3:// prefix: list, fetch, put, move."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from gpu_analysis.errors import UserError


@dataclasses.dataclass(frozen=True)
class StoredObject:
    """One file under a listed prefix; `version` changes whenever its content may have."""

    uri: str
    name: str  # relative to the listed prefix, "/"-separated
    size_bytes: int
    version: str  # the S3 ETag, or size and mtime in nanoseconds for a local file


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def join(uri: str | os.PathLike, *names: str) -> str:
    base = str(uri)
    if is_s3(base):
        return "/".join([base.rstrip("/"), *names])
    return str(Path(base, *names))


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise UserError(f"{uri}: an s3 URI needs a bucket, like s3://bucket/prefix")
    return bucket, key


def s3_client() -> Any:
    import boto3

    # The standard boto3 chain: Pod Identity on the cluster, AWS_ENDPOINT_URL for a moto server.
    return boto3.client("s3")


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
                    version=f"{stat.st_size}-{stat.st_mtime_ns}",
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
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise UserError(f"{uri}: no such object") from None
            raise
    else:
        if not Path(uri).is_file():
            raise UserError(f"{uri}: no such file")
        shutil.copyfile(uri, partial)
    os.replace(partial, local_path)
    return local_path


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


def put_bytes(payload: bytes, uri: str, *, client: Any = None) -> None:
    if is_s3(uri):
        client = client or s3_client()
        bucket, key = split_s3(uri)
        client.put_object(Bucket=bucket, Key=key, Body=payload)
        return
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(payload)
    os.replace(partial, target)


def read_bytes(uri: str, *, client: Any = None) -> bytes:
    if is_s3(uri):
        client = client or s3_client()
        bucket, key = split_s3(uri)
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return Path(uri).read_bytes()


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
