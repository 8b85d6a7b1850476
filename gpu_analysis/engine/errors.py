"""UserError, shown to users as-is (`error: <message>`, exit 2), and the errors that become one."""

from __future__ import annotations

import errno
import os
import sys

_SPACE = "free some space or write elsewhere"
_S3_DENIED = "check the bucket policy and the s3 permissions of these credentials"

# OS errors that the input or the machine causes and that running the same step again does not
# cure, with what to do about each. A worker reports these as its one error line, so the step
# fails at once; other OS errors (a dropped connection, a failing disk) keep their retries.
LASTING_OS_ERRORS = {
    errno.ENOSPC: _SPACE,
    errno.EDQUOT: _SPACE,
    errno.EFBIG: "a file got larger than this machine allows; " + _SPACE,
    errno.EACCES: "check the permissions along the path",
    errno.EPERM: "check the permissions along the path",
    errno.EROFS: "write elsewhere",
    errno.ELOOP: "a symbolic link on the path leads back to itself; fix or remove it",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENAMETOOLONG: "use a shorter path",
}
# The same for S3: the credentials or the bucket policy refuse, or there is no such bucket.
# Some S3 implementations (moto, proxies) answer a denied GetObject with a bare "403".
LASTING_S3_ERRORS = {
    "AccessDenied": _S3_DENIED,
    "AllAccessDisabled": _S3_DENIED,
    "403": _S3_DENIED,
    "NoSuchBucket": "check the bucket name",
}


class UserError(Exception):
    """Bad input or settings. The message names the problem and, where useful, what to do."""


def os_error_line(exc: OSError, *, with_paths: bool = True) -> str:
    """An OS error as one line: the path(s), what the system said, and what to do."""
    named = (exc.filename, exc.filename2) if with_paths else ()
    paths = " -> ".join(os.fsdecode(p) for p in named if p is not None)
    said = exc.strerror or str(exc) or type(exc).__name__
    line = f"{paths}: {said}" if paths else said
    remedy = LASTING_OS_ERRORS.get(exc.errno)
    return f"{line}; {remedy}" if remedy else line


def s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError (AccessDenied, 403, ...), else None."""
    # botocore is imported only by code that talks to S3; without it there is no ClientError.
    exceptions = sys.modules.get("botocore.exceptions")
    if exceptions is None or not isinstance(exc, exceptions.ClientError):
        return None
    return str(exc.response.get("Error", {}).get("Code", "")) or None


def s3_refusal(exc: BaseException, uri: str) -> UserError | None:
    """The UserError for an S3 refusal of `uri` that a retry cannot cure, else None."""
    code = s3_error_code(exc)
    if code not in LASTING_S3_ERRORS:
        return None
    message = exc.response.get("Error", {}).get("Message") or code  # type: ignore[attr-defined]
    return UserError(f"{uri}: S3 refused the read ({code}: {message}); {LASTING_S3_ERRORS[code]}")


def as_user_error(exc: BaseException, *, lasting_only: bool = True) -> UserError | None:
    """`exc` as a UserError when the input or the machine caused it, else None (a bug).

    With `lasting_only` (a worker, whose step may be retried) only errors that a retry cannot
    cure qualify: a full disk, a denied path or S3 object, a symbolic-link loop. Without it
    (the CLI, which nobody retries) every OS error, S3 error and lack of memory does.
    """
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, OSError):
        if lasting_only and exc.errno not in LASTING_OS_ERRORS:
            return None
        return UserError(os_error_line(exc))
    code = s3_error_code(exc)
    if code is not None:
        if lasting_only and code not in LASTING_S3_ERRORS:
            return None
        remedy = LASTING_S3_ERRORS.get(code, "try again later or check the S3 endpoint")
        return UserError(f"S3 refused: {exc}; {remedy}")
    if lasting_only:
        return None
    if isinstance(exc, MemoryError):
        detail = f" ({exc})" if str(exc) else ""
        return UserError(f"out of memory{detail}; the input needs more than this machine has")
    exceptions = sys.modules.get("botocore.exceptions")
    if exceptions is not None and isinstance(exc, exceptions.BotoCoreError):
        # No credentials, no endpoint, a dropped connection: the S3 set-up, not the code.
        return UserError(f"S3: {exc}")
    return None
