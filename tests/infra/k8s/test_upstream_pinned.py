"""The pinned upstream files: found locally or downloaded, and refused unless their sha256 match."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import re
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.upstream import pinned
from tests.upstream.pinned import (
    CACHE_DIR_ENV,
    LOCAL_DIR_ENV,
    PINNED,
    ChecksumMismatch,
    UpstreamUnavailable,
    upstream_bytes,
)

SCHEMA = pinned.CILIUM_VALUES_SCHEMA


@pytest.fixture(autouse=True)
def _no_user_copy(monkeypatch, tmp_path):
    """Each test decides where the files are: no user folder, an empty cache of its own."""
    monkeypatch.delenv(LOCAL_DIR_ENV, raising=False)
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))


def real(path: str) -> bytes:
    try:
        return upstream_bytes(path)
    except UpstreamUnavailable as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture
def file_server(tmp_path):
    """A plain HTTP server over a folder, standing in for raw.githubusercontent.com."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def served_table(root: Path, base: str) -> dict[str, pinned.Pinned]:
    """The real table with each file (and the Cilium chart package) served from `root`."""
    table = {}
    for path, entry in PINNED.items():
        content = real(path)
        if entry.archive is None:
            (root / Path(path).name).write_bytes(content)
            table[path] = dataclasses.replace(entry, urls=(f"{base}/{Path(path).name}",))
            continue
        package = io.BytesIO()
        with tarfile.open(fileobj=package, mode="w:gz") as tar:
            info = tarfile.TarInfo(entry.archive.member)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        (root / "chart.tgz").write_bytes(package.getvalue())
        archive = dataclasses.replace(
            entry.archive,
            urls=(f"{base}/chart.tgz",),
            sha256=hashlib.sha256(package.getvalue()).hexdigest(),
        )
        table[path] = dataclasses.replace(entry, archive=archive)
    return table


@pytest.mark.parametrize("path", sorted(PINNED))
def test_every_pinned_file_is_found_and_matches_its_sha256(path):
    assert hashlib.sha256(real(path)).hexdigest() == PINNED[path].sha256


def test_the_pinned_table_is_the_one_the_shared_readme_lists():
    readme = pinned.SHARED_UPSTREAM / "README.md"
    if not readme.is_file():
        pytest.skip(f"{readme} is absent on this machine; the table cannot be compared")
    listed = dict(
        (path, sha)
        for sha, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme.read_text(), re.M)
    )
    assert listed == {path: entry.sha256 for path, entry in PINNED.items()}


def test_a_corrupted_local_copy_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "upstream" / pinned.NODEPOOL_CRD
    copy.parent.mkdir(parents=True)
    content = bytearray(real(pinned.NODEPOOL_CRD))
    content[100] ^= 0x01  # one flipped bit
    copy.write_bytes(bytes(content))
    monkeypatch.setenv(LOCAL_DIR_ENV, str(tmp_path / "upstream"))
    with pytest.raises(ChecksumMismatch, match=rf"{copy}: sha256 [0-9a-f]{{64}} is not the pinned"):
        upstream_bytes(pinned.NODEPOOL_CRD)


def test_a_good_local_copy_is_used_before_shared_and_cache(tmp_path, monkeypatch):
    copy = tmp_path / "upstream" / pinned.KARPENTER_VALUES
    copy.parent.mkdir(parents=True)
    copy.write_bytes(real(pinned.KARPENTER_VALUES))
    monkeypatch.setenv(LOCAL_DIR_ENV, str(tmp_path / "upstream"))
    unreachable = {
        pinned.KARPENTER_VALUES: dataclasses.replace(
            PINNED[pinned.KARPENTER_VALUES], urls=(f"http://127.0.0.1:{free_port()}/v.yaml",)
        )
    }
    assert upstream_bytes(pinned.KARPENTER_VALUES, shared_dir=None, table=unreachable) == (
        copy.read_bytes()
    )


def test_a_corrupted_cache_entry_is_refused(tmp_path):
    cached = tmp_path / "cache" / pinned.CCNP_CRD
    cached.parent.mkdir(parents=True)
    cached.write_bytes(real(pinned.CCNP_CRD) + b"\n# edited\n")
    with pytest.raises(ChecksumMismatch, match="refusing it"):
        upstream_bytes(pinned.CCNP_CRD, shared_dir=None)


def test_without_shared_files_each_is_downloaded_verified_and_cached(file_server, tmp_path):
    root, base = file_server
    table = served_table(root, base)
    for path in table:
        assert hashlib.sha256(upstream_bytes(path, shared_dir=None, table=table)).hexdigest() == (
            PINNED[path].sha256
        )
        assert (tmp_path / "cache" / path).read_bytes() == real(path)
    # the chart package was unpacked: only values.schema.json is kept
    assert not list((tmp_path / "cache").rglob("*.tgz"))
    # a second run reads the cache: the server may be gone
    for served in root.iterdir():
        served.unlink()
    assert upstream_bytes(SCHEMA, shared_dir=None, table=table) == real(SCHEMA)


def test_a_download_with_other_bytes_is_refused_and_not_cached(file_server, tmp_path):
    root, base = file_server
    table = served_table(root, base)
    (root / Path(pinned.NODEPOOL_CRD).name).write_bytes(b"apiVersion: v1\nkind: Tampered\n")
    with pytest.raises(ChecksumMismatch, match=r"karpenter.sh_nodepools.yaml: sha256 .* refusing"):
        upstream_bytes(pinned.NODEPOOL_CRD, shared_dir=None, table=table)
    assert not (tmp_path / "cache" / pinned.NODEPOOL_CRD).exists()


def test_a_chart_package_with_other_bytes_is_refused(file_server):
    root, base = file_server
    table = served_table(root, base)
    entry = table[SCHEMA]
    table[SCHEMA] = dataclasses.replace(
        entry, archive=dataclasses.replace(entry.archive, sha256=PINNED[SCHEMA].archive.sha256)
    )
    with pytest.raises(ChecksumMismatch, match=r"chart.tgz: sha256 .* is not the pinned 182035ae"):
        upstream_bytes(SCHEMA, shared_dir=None, table=table)


def test_a_failed_download_says_in_one_line_which_file_and_how_to_provide_it():
    dead = f"http://127.0.0.1:{free_port()}"
    table = {
        pinned.EC2NODECLASS_CRD: dataclasses.replace(
            PINNED[pinned.EC2NODECLASS_CRD], urls=(f"{dead}/a.yaml", f"{dead}/mirror.yaml")
        )
    }
    with pytest.raises(UpstreamUnavailable) as raised:
        upstream_bytes(pinned.EC2NODECLASS_CRD, shared_dir=None, table=table)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(
        f"error: upstream file {pinned.EC2NODECLASS_CRD} could not be fetched ("
    )
    assert f"{dead}/a.yaml" in message and f"{dead}/mirror.yaml" in message
    assert f"set {LOCAL_DIR_ENV} to it" in message


def test_a_failed_first_url_falls_back_to_the_mirror(file_server):
    root, base = file_server
    table = served_table(root, base)
    entry = table[pinned.CNP_CRD]
    dead = f"http://127.0.0.1:{free_port()}/gone.yaml"
    table[pinned.CNP_CRD] = dataclasses.replace(entry, urls=(dead, *entry.urls))
    assert upstream_bytes(pinned.CNP_CRD, shared_dir=None, table=table) == real(pinned.CNP_CRD)


def test_the_real_urls_are_pinned_to_commits_not_branches():
    for entry in PINNED.values():
        urls = entry.urls if entry.archive is None else entry.archive.urls
        assert urls, entry.path
        for url in urls:
            assert url.startswith("https://"), url
            if "raw.githubusercontent.com" in url:
                assert re.search(r"/[0-9a-f]{40}/", url), f"{url} is not pinned to a commit"
