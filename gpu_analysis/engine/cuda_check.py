"""Why ONNX Runtime cannot run on CUDA here: the first missing piece, named in one sentence.

A GPU step needs, in this order: the onnxruntime-gpu package, the NVIDIA kernel driver on the
node, a GPU device handed to this container (the device plugin's job on Kubernetes), the
driver's user library (mounted by the NVIDIA container runtime), and the CUDA runtime
libraries the CUDA provider links against. Each is checked from files and `dlopen` alone, so a
machine without a GPU learns which piece is missing without asking CUDA for a session.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import re
from pathlib import Path

CUDA_PROVIDER = "CUDAExecutionProvider"
# The kernel module writes this file when it loads; a container sees the host's /proc/driver.
DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")
DEVICE_DIR = Path("/dev")
# WSL 2 exposes the GPU through this paravirtual device instead of /dev/nvidia*.
WSL_GPU_DEVICE = Path("/dev/dxg")
DRIVER_LIBRARY = "libcuda.so.1"
_MISSING_LIBRARY = re.compile(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file")


def driver_version() -> str | None:
    """The loaded NVIDIA kernel driver's version (e.g. '570.124.06'), None without one."""
    try:
        text = DRIVER_VERSION_FILE.read_text()
    except OSError:
        return None
    found = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+\.\d+(?:\.\d+)?)", text)
    return found.group(1) if found else "unknown"


def gpu_device_files() -> list[str]:
    """The GPU device files this process can see: /dev/nvidia0, /dev/nvidia1, ..."""
    try:
        names = os.listdir(DEVICE_DIR)
    except OSError:
        return []
    return sorted(str(DEVICE_DIR / n) for n in names if re.fullmatch(r"nvidia\d+", n))


def missing_before_session(available_providers: list[str]) -> str | None:
    """The first piece below the CUDA libraries that is missing, or None when all are there.

    Cheap (files and one dlopen): `create_session` asks this before it tries CUDA, so a machine
    without a GPU never makes ONNX Runtime print its loud CUDA load errors.
    """
    if CUDA_PROVIDER not in available_providers:
        return (
            "onnxruntime-gpu is not installed (ONNX Runtime offers only "
            f"{', '.join(available_providers) or 'no provider'}); "
            "install onnxruntime-gpu[cuda,cudnn] in place of onnxruntime"
        )
    wsl = WSL_GPU_DEVICE.exists()
    if not wsl and driver_version() is None:
        return (
            f"no NVIDIA driver is loaded ({DRIVER_VERSION_FILE} is absent); run the step on a "
            "GPU node whose image has the NVIDIA driver (the EKS accelerated AMI)"
        )
    if not wsl and not gpu_device_files():
        visible = os.environ.get("NVIDIA_VISIBLE_DEVICES")
        return (
            "the NVIDIA driver is loaded but no GPU device is visible to this container "
            f"(no {DEVICE_DIR}/nvidia0; NVIDIA_VISIBLE_DEVICES"
            f"{' unset' if visible is None else '=' + repr(visible)}); the pod needs an "
            "nvidia.com/gpu limit and the NVIDIA device plugin running on its node"
        )
    try:
        ctypes.CDLL(DRIVER_LIBRARY)
    except OSError as exc:
        return (
            f"a GPU is visible but the driver library {DRIVER_LIBRARY} cannot be loaded "
            f"({_first_line(exc)}); run the container with the NVIDIA container runtime, "
            "which mounts it"
        )
    return None


def preload_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries that `onnxruntime-gpu[cuda,cudnn]` installs as wheels.

    The CUDA provider has no search path into site-packages (no RUNPATH), so without this
    preload it finds them only on LD_LIBRARY_PATH, and ONNX Runtime then drops CUDA without
    failing. What cannot be loaded is named by `missing_cuda_library` afterwards; the preload's
    own printed complaints are dropped here so that one line says it.
    """
    import onnxruntime as ort

    if not hasattr(ort, "preload_dlls"):  # onnxruntime-gpu before 1.21
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
        ort.preload_dlls(directory="")


def missing_cuda_library() -> str | None:
    """The CUDA library the CUDA provider fails to load with, as a sentence; None if it loads.

    The provider library is opened as ONNX Runtime opens it, with lazy binding (its one
    unresolved symbol comes from ONNX Runtime's bridge library), so a missing dependency is
    what the loader reports.
    """
    import onnxruntime as ort

    provider_library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not provider_library.is_file():
        return f"the CUDA provider library {provider_library} is missing; reinstall onnxruntime-gpu"
    try:
        ctypes.CDLL(str(provider_library), mode=os.RTLD_LAZY | os.RTLD_LOCAL)
    except OSError as exc:
        found = _MISSING_LIBRARY.search(str(exc))
        what = f"the CUDA library {found.group(1)} is missing" if found else _first_line(exc)
        return (
            f"{what} (ONNX Runtime {ort.__version__} needs {_cuda_build()} and cuDNN 9); "
            "install onnxruntime-gpu[cuda,cudnn] or put the libraries on LD_LIBRARY_PATH"
        )
    return None


def cuda_dropped_reason() -> str:
    """Why ONNX Runtime fell back to CPU when driver, device and driver library are present."""
    library = missing_cuda_library()
    if library:
        return library
    import onnxruntime as ort

    return (
        f"ONNX Runtime's CUDA provider did not start although the driver "
        f"({driver_version() or 'WSL'}), a GPU and the CUDA libraries are present; its own "
        f"error is in the log above (ONNX Runtime {ort.__version__} is built for "
        f"{_cuda_build()}: the driver must support it)"
    )


def _cuda_build() -> str:
    try:
        from onnxruntime.capi.build_and_package_info import cuda_version
    except ImportError:
        return "CUDA"
    return f"CUDA {cuda_version}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
