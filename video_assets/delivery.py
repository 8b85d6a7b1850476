"""Publishing a match's results: each delivery a whole version, made current in one step.

A delivery is written under `results/<match_id>/versions/<version>/` with its manifest, checked
to still be the newest content for the match, then made current:
- locally by swapping one symlink (`current` -> `versions/<version>`); the files at
  `results/<match_id>/<file>` (contracts sections 2 and 4) are links through `current`, so a
  reader sees the old delivery or the new one, whole, never a mix;
- on S3 by writing `results/<match_id>/manifest.json` last, after the files were copied to
  `results/<match_id>/<file>`; the manifest names the version's paths, which never change, so a
  reader that follows them sees one whole delivery.
A failure at any point before the switch leaves the previous version current and intact. The
newest `keep_versions` versions (and always the current one) are kept, older ones removed.
Plain Python, no Dagster: the match_delivery asset and the tests call `publish`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gpu_analysis.engine import storage
from gpu_analysis.engine.errors import UserError
from video_assets.layout import MANIFEST, MatchLayout

CURRENT_LINK = "current"
VERSIONS = "versions"
DEFAULT_KEEP_VERSIONS = 3


class Superseded(UserError):
    """Newer content for the match arrived after this run started: its results are not
    published (the run for the newer content delivers)."""


def new_version_id(run_id: str, now: dt.datetime | None = None) -> str:
    """Sortable by time: `20261129T165512123456Z-1596e1df`."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%S%fZ}-{run_id[:8]}"


def publish(
    layout: MatchLayout,
    match_id: str,
    version: str,
    staged: dict[str, Path],
    manifest_fields: dict[str, Any],
    *,
    newer_content: Callable[[], str | None],
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
    client: Any = None,
) -> dict[str, Any]:
    """Publish `staged` (file name -> local file) as `version` of the match; returns the manifest.

    `newer_content()` says why this delivery is stale (newer content arrived), or None; it is
    asked right before the switch, under the match's lock where the storage has one.
    Raises Superseded, leaving the current delivery as it was.
    """
    if not staged:
        raise UserError(f"{match_id}: nothing staged to deliver")
    version_uri = layout.version_uri(match_id, version)
    try:
        manifest = _write_version(layout, match_id, version, staged, manifest_fields, client)
        names = [*sorted(staged), MANIFEST]
        payload = json.dumps(manifest, indent=2, sort_keys=True).encode()
        if storage.is_s3(version_uri):
            _switch_s3(layout, match_id, version, names, payload, newer_content, client)
        else:
            _switch_local(layout, match_id, version, names, newer_content)
    except BaseException:
        # Superseded, a full disk, a denied write, a kill signal's exception: the version that
        # did not become current goes, so retries and failures leave no half versions behind.
        with contextlib.suppress(Exception):
            if current_version(layout, match_id, client) != version:
                _remove_version(layout, match_id, version, client)
        raise
    _prune(layout, match_id, keep_versions, client)
    return manifest


def _write_version(
    layout: MatchLayout,
    match_id: str,
    version: str,
    staged: dict[str, Path],
    manifest_fields: dict[str, Any],
    client: Any,
) -> dict[str, Any]:
    files = []
    for name, local in sorted(staged.items()):
        storage.put_file(local, layout.version_uri(match_id, version, name), client=client)
        files.append(
            {
                "name": name,
                "size_bytes": local.stat().st_size,
                "sha256": storage.sha256_file(local),
                "path": f"{VERSIONS}/{version}/{name}",
            }
        )
    manifest = {**manifest_fields, "match_id": match_id, "version": version, "files": files}
    payload = json.dumps(manifest, indent=2, sort_keys=True).encode()
    storage.write_bytes(layout.version_uri(match_id, version, MANIFEST), payload, client=client)
    return manifest


def _remove_version(layout: MatchLayout, match_id: str, version: str, client: Any) -> None:
    uri = layout.version_uri(match_id, version)
    if storage.is_s3(uri):
        storage.remove_prefix(uri, client=client)
    else:
        shutil.rmtree(uri, ignore_errors=True)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the match's versions folder: one switch at a time per match."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _replace_link(link: Path, target: str) -> None:
    if link.is_symlink() and os.readlink(link) == target:
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)  # atomic on one file system: the old entry or the new, never none


def _switch_local(
    layout: MatchLayout,
    match_id: str,
    version: str,
    names: list[str],
    newer_content: Callable[[], str | None],
) -> None:
    results = Path(layout.delivery_uri(match_id))
    with _locked(results / VERSIONS):
        reason = newer_content()
        if reason:
            raise Superseded(reason)
        # The switch itself: one rename. Every published name links through `current`.
        _replace_link(results / CURRENT_LINK, f"{VERSIONS}/{version}")
        for name in names:
            _replace_link(results / name, f"{CURRENT_LINK}/{name}")
        for entry in results.iterdir():
            stale = entry.name not in names and entry.name not in (CURRENT_LINK, VERSIONS)
            if stale and (entry.is_symlink() or entry.is_file()):
                entry.unlink()  # a file the new version no longer has (or an old plain file)


def _switch_s3(
    layout: MatchLayout,
    match_id: str,
    version: str,
    names: list[str],
    manifest_payload: bytes,
    newer_content: Callable[[], str | None],
    client: Any,
) -> None:
    client = client or storage.s3_client()
    # S3 has no lock to hold across the switch: the check runs last, right before the copies;
    # the manifest, written after them, is what readers follow.
    reason = newer_content()
    if reason:
        raise Superseded(reason)
    for name in names[:-1]:
        source_bucket, source_key = storage.split_s3(layout.version_uri(match_id, version, name))
        target_bucket, target_key = storage.split_s3(layout.delivery_uri(match_id, name))
        client.copy({"Bucket": source_bucket, "Key": source_key}, target_bucket, target_key)
    current = {n for n in names}
    for item in storage.list_objects(layout.delivery_uri(match_id), client=client):
        if "/" not in item.name and item.name not in current:
            storage.remove_file(item.uri, client=client)
    storage.write_bytes(layout.delivery_uri(match_id, MANIFEST), manifest_payload, client=client)


def current_version(layout: MatchLayout, match_id: str, client: Any = None) -> str | None:
    """The version readers see now, or None before the first delivery."""
    manifest_uri = layout.delivery_uri(match_id, MANIFEST)
    try:
        manifest = json.loads(storage.read_bytes(manifest_uri, client=client))
    except UserError:
        return None
    return manifest.get("version")


def _prune(layout: MatchLayout, match_id: str, keep_versions: int, client: Any) -> None:
    versions_uri = storage.join(layout.delivery_uri(match_id), VERSIONS)
    if storage.is_s3(versions_uri):
        listed = storage.list_objects(versions_uri, client=client)
        present = sorted({item.name.split("/", 1)[0] for item in listed})
    else:
        present = sorted(p.name for p in Path(versions_uri).iterdir() if p.is_dir())
    current = current_version(layout, match_id, client)
    for old in present[: max(0, len(present) - keep_versions)]:
        if old != current:
            _remove_version(layout, match_id, old, client)
