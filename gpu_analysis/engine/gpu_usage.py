"""GPU utilisation and peak memory over a step, sampled through NVML; nothing without a GPU.

A background thread reads the GPU this process uses (the first of CUDA_VISIBLE_DEVICES, else
device 0: in a step pod, the one GPU the device plugin assigned) every `interval_s`, plus once
at the start and once at the end, so a short step still gets two readings. Where NVML cannot
start (no driver, no GPU, the library not mounted) nothing is measured and `GpuUsage` is None:
the step reports no GPU figures rather than zeros.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import Iterator, Sequence

log = logging.getLogger("gpu_analysis.engine.gpu_usage")

DEFAULT_INTERVAL_S = 0.5
MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class GpuSample:
    """One NVML reading: the share of the last period a kernel ran, and the memory in use."""

    utilisation_pct: float
    memory_used_bytes: int


@dataclasses.dataclass(frozen=True)
class GpuUsage:
    """What a step's GPU did over the step."""

    device_name: str
    samples: int
    utilisation_pct_mean: float
    utilisation_pct_max: float
    # The device's memory in use (every process on it): with one GPU per step pod, the step's.
    memory_peak_mib: float

    def as_metadata(self) -> dict[str, float]:
        return {
            "gpu_utilisation_pct_mean": self.utilisation_pct_mean,
            "gpu_utilisation_pct_max": self.utilisation_pct_max,
            "gpu_memory_peak_mib": self.memory_peak_mib,
        }


def summarise(device_name: str, samples: Sequence[GpuSample]) -> GpuUsage | None:
    """The usage over `samples`; None when there are none (nothing was measured)."""
    if not samples:
        return None
    utilisation = [s.utilisation_pct for s in samples]
    return GpuUsage(
        device_name=device_name,
        samples=len(samples),
        utilisation_pct_mean=round(sum(utilisation) / len(utilisation), 1),
        utilisation_pct_max=round(max(utilisation), 1),
        memory_peak_mib=round(max(s.memory_used_bytes for s in samples) / MIB, 1),
    )


class NvmlDevice:
    """The GPU this process uses, read through NVML (`pynvml`, package nvidia-ml-py)."""

    def __init__(self, handle, name: str):
        self._handle = handle
        self.name = name

    @classmethod
    def open(cls) -> NvmlDevice | None:
        """The device, or None (logged at debug) when NVML or the GPU is not there."""
        try:
            import pynvml
        except ImportError:
            log.debug("gpu usage: nvidia-ml-py is not installed; no GPU figures")
            return None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            log.debug("gpu usage: NVML did not start (%s); no GPU figures", exc)
            return None
        try:
            handle = _visible_device_handle(pynvml)
            name = pynvml.nvmlDeviceGetName(handle)
        except pynvml.NVMLError as exc:
            log.debug("gpu usage: no GPU to read (%s); no GPU figures", exc)
            pynvml.nvmlShutdown()
            return None
        return cls(handle, name.decode() if isinstance(name, bytes) else str(name))

    def read(self) -> GpuSample:
        import pynvml

        rates = pynvml.nvmlDeviceGetUtilizationRates(self._handle)
        memory = pynvml.nvmlDeviceGetMemoryInfo(self._handle)
        return GpuSample(utilisation_pct=float(rates.gpu), memory_used_bytes=int(memory.used))

    def close(self) -> None:
        import pynvml

        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _visible_device_handle(pynvml):
    # CUDA numbers the devices in CUDA_VISIBLE_DEVICES from 0, and ONNX Runtime and PyTorch use
    # CUDA device 0: the first entry, by UUID or by index. NVML's indices follow PCI bus order,
    # CUDA's too when CUDA_DEVICE_ORDER=PCI_BUS_ID; in a pod with one GPU both are 0.
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if first.startswith(("GPU-", "MIG-")):
        return pynvml.nvmlDeviceGetHandleByUUID(first)
    return pynvml.nvmlDeviceGetHandleByIndex(int(first) if first.isdigit() else 0)


class UsageRecorder:
    """Samples a device on a thread between `start` and `stop`; `usage` after `stop`."""

    def __init__(self, device: NvmlDevice | None, interval_s: float = DEFAULT_INTERVAL_S):
        self.device = device
        self.interval_s = interval_s
        self.samples: list[GpuSample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False

    def start(self) -> None:
        if self.device is None:
            return
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="gpu-usage", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            if not self._failed:
                self._sample()

    @property
    def device_name(self) -> str | None:
        return self.device.name if self.device is not None else None

    @property
    def usage(self) -> GpuUsage | None:
        if self.device is None:
            return None
        return summarise(self.device.name, self.samples)

    def metadata(self) -> dict[str, float]:
        """The usage as step metadata; empty (no key at all) when nothing was measured."""
        usage = self.usage
        return usage.as_metadata() if usage is not None else {}

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self._sample():
                return

    def _sample(self) -> bool:
        # A reading that fails (the GPU fell off the bus) ends sampling; what was read stands.
        import pynvml

        try:
            self.samples.append(self.device.read())
        except pynvml.NVMLError as exc:
            log.warning("gpu usage: reading the GPU failed (%s); sampling stopped", exc)
            self._failed = True
            return False
        return True


@contextlib.contextmanager
def measure(interval_s: float = DEFAULT_INTERVAL_S) -> Iterator[UsageRecorder]:
    """Sample the GPU this process uses over the block; the recorder holds the result."""
    device = NvmlDevice.open()
    recorder = UsageRecorder(device, interval_s)
    recorder.start()
    try:
        yield recorder
    finally:
        recorder.stop()
        if device is not None:
            device.close()


def device_label(execution_provider: str, gpu_name: str | None) -> str:
    """What ran a step, for its metadata: the provider, and the GPU's name on CUDA."""
    if execution_provider == "CUDAExecutionProvider" and gpu_name:
        return f"{execution_provider} ({gpu_name})"
    return execution_provider
