"""Files the match storage writes are readable by others, like every other delivered file."""

from __future__ import annotations

import os

from gpu_analysis.profile import load_profile
from video_assets.definitions import build_resources


def test_a_delivery_manifest_gets_the_usual_permissions(tmp_path):
    storage = build_resources(load_profile("local"))["storage"]
    manifest_uri = storage.layout.delivery_uri("m1", "manifest.json")
    old_umask = os.umask(0o022)  # the usual one, whatever the test runner was started with
    try:
        storage.write_json({"version": "v1", "files": []}, manifest_uri)
    finally:
        os.umask(old_umask)
    # Written through a private temporary file, it used to keep that file's 0600.
    assert os.stat(manifest_uri).st_mode & 0o777 == 0o644
