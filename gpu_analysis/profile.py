"""Deployment profiles: typed settings from a TOML file in the repo, overridable by environment.

A profile is data. Code asks the profile (`profile.storage == "s3"`) instead of branching on
profile names. `GPU_ANALYSIS_PROFILE` picks the file (`local` by default); every field can be
overridden by `GPU_ANALYSIS_<FIELD>` (for example `GPU_ANALYSIS_DATA_ROOT`, `GPU_ANALYSIS_BUCKET`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args, get_type_hints

from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.records import DEFAULT_SAMPLE_FPS

PROFILE_DIR = Path(__file__).parent / "profiles"
PROFILE_ENV = "GPU_ANALYSIS_PROFILE"
# Match video runs at 25 to 60 frames per second; a higher setting is a typo (500 for 5.00), and
# the engine would clamp it to every frame of every match, holding the T4 pool for hours.
MAX_SAMPLE_FPS = 60.0
ENV_PREFIX = "GPU_ANALYSIS_"

Storage = Literal["local", "s3"]
Execution = Literal["subprocess", "k8s"]
Device = Literal["auto", "cpu", "cuda"]


# An image reference is pinned when it names a digest, or a tag other than `latest` (the tag every
# push moves, and the one a reference without a tag means). The ECR repository refuses to
# overwrite a tag (imageTagMutability IMMUTABLE), so a pinned tag always names the same image.
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # the OCI distribution spec's tag rule


def split_image(image: str) -> tuple[str, str]:
    """`repository:tag` or `repository@sha256:...` -> (repository, tag or digest); a reference
    without either gives an empty second part. A registry port (`host:5000/name`) is no tag."""
    if "@" in image:
        repository, _, digest = image.partition("@")
        return repository, digest
    name_start = image.rfind("/") + 1
    colon = image.rfind(":")
    if colon < name_start:
        return image, ""
    return image[:colon], image[colon + 1 :]


def image_pin_problem(image: str) -> str | None:
    """Why this image reference does not name one immutable image, or None when it does."""
    repository, ref = split_image(image)
    if not repository:
        return f"{image!r} names no repository"
    if "@" in image:
        if not _DIGEST.match(ref):
            return f"{image!r}: a digest must be sha256: and 64 hex digits"
        return None
    if not ref:
        return f"{image!r} has no tag, which means :latest; name an immutable tag or a digest"
    if not _TAG.match(ref):
        return f"{image!r}: {ref!r} is not a valid tag"
    if ref == "latest":
        return f"{image!r}: :latest moves with every push; name an immutable tag or a digest"
    return None


class ProfileError(UserError, ValueError):
    """A profile name or setting is invalid; the message names the setting and what to do."""


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    storage: Storage
    data_root: Path
    execution: Execution
    device: Device
    model: str
    batch_size: int
    aws_region: str
    cluster_name: str
    namespace: str
    image: str
    nodepool_gpu_preprocessing: str
    nodepool_gpu_inference: str
    nodepool_cpu: str
    gpu_t4_pool_limit: int
    gpu_a10g_pool_limit: int
    bucket: str = ""
    aws_account_id: str = ""
    sample_fps: float = DEFAULT_SAMPLE_FPS
    # How long an incoming file must stay unchanged before the sensor takes it: a local copy
    # that stalls must not pass for a finished one. S3 lists an object only once it is whole.
    incoming_settle_s: float = 30.0
    # Where infrastructure alerts (drift, failed infra runs) go: an SNS topic ARN, an https
    # webhook URL, or a file path (JSON lines); empty: the Dagster UI only. See infra_assets.alerts.
    alert_sink: str = ""

    @property
    def storage_root_uri(self) -> str:
        """Where match files live (video_assets.layout): a local folder or s3://bucket."""
        if self.storage == "s3":
            return f"s3://{self.bucket}"
        return str(self.data_root)

    @property
    def scratch_dir(self) -> Path:
        """Local disk for what a CPU step must read or write locally (inside a pod on staging)."""
        return self.data_root if self.storage == "s3" else self.data_root / "scratch"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name: str | None = None, env: Mapping[str, str] | None = None) -> Profile:
    """Load a profile by name (default `$GPU_ANALYSIS_PROFILE`, else `local`) with env overrides."""
    env = os.environ if env is None else env
    name = name or env.get(PROFILE_ENV, "").strip() or "local"
    path = PROFILE_DIR / f"{name}.toml"
    if not path.is_file():
        raise ProfileError(
            f"{PROFILE_ENV}={name!r} is not a profile; choose one of: "
            + ", ".join(available_profiles())
        )
    with path.open("rb") as f:
        raw: dict[str, object] = tomllib.load(f)
    raw["name"] = name

    hints = get_type_hints(Profile)
    for field_name in hints:
        env_name = ENV_PREFIX + field_name.upper()
        if field_name != "name" and env_name in env:
            raw[field_name] = env[env_name]

    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise ProfileError(f"{path.name}: unknown setting(s) {', '.join(unknown)}")
    missing = sorted(
        f.name
        for f in dataclasses.fields(Profile)
        if f.name not in raw and f.default is dataclasses.MISSING
    )
    if missing:
        raise ProfileError(f"{path.name}: missing setting(s) {', '.join(missing)}")

    values = {key: _coerce(key, value, hints[key], name) for key, value in raw.items()}
    profile = Profile(**values)
    _validate(profile)
    return profile


def _setting_label(key: str, profile_name: str) -> str:
    return f"setting {key!r} (profile {profile_name!r}, env {ENV_PREFIX}{key.upper()})"


def _coerce(key: str, value: object, hint: object, profile_name: str) -> object:
    label = _setting_label(key, profile_name)
    if getattr(hint, "__origin__", None) is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ProfileError(f"{label}: {value!r} is not one of {', '.join(choices)}")
        return value
    try:
        if hint is Path:
            return Path(str(value)).expanduser().resolve()
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)  # type: ignore[arg-type]
        if hint is float:
            return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ProfileError(f"{label}: {value!r} is not a valid {hint.__name__}") from None
    return str(value)


def _validate(p: Profile) -> None:
    def fail(key: str, problem: str) -> None:
        raise ProfileError(f"{_setting_label(key, p.name)}: {problem}")

    if not 0 < p.sample_fps <= MAX_SAMPLE_FPS:  # also refuses NaN and infinity
        fail("sample_fps", f"must be above 0 and at most {MAX_SAMPLE_FPS:g}, got {p.sample_fps}")
    if not 0 <= p.incoming_settle_s < float("inf"):  # also refuses NaN: no file would settle
        fail("incoming_settle_s", f"must be finite and >= 0 seconds, got {p.incoming_settle_s}")
    if p.batch_size < 1:
        fail("batch_size", f"must be >= 1, got {p.batch_size}")
    for key in ("gpu_t4_pool_limit", "gpu_a10g_pool_limit"):
        if getattr(p, key) < 1:
            fail(key, f"must be >= 1, got {getattr(p, key)}")
    if p.alert_sink.startswith("arn:") and not p.alert_sink.startswith("arn:aws:sns:"):
        fail(
            "alert_sink", f"an ARN here must be an SNS topic (arn:aws:sns:...), got {p.alert_sink}"
        )
    if p.storage == "s3" and not p.bucket:
        fail("bucket", "storage is 's3' but no bucket is set")
    if p.execution == "k8s" and not p.image:
        fail("image", "execution is 'k8s' but no container image is set")
    if p.image and (problem := image_pin_problem(p.image)):
        fail("image", problem)


if __name__ == "__main__":
    # Standard library only, so `make` can check the profile before installing anything.
    import sys

    try:
        active = load_profile()
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"profile: {active.name} (storage {active.storage}, execution {active.execution})")
