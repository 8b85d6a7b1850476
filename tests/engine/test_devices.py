"""Honest devices: each missing piece of a CUDA setup is named; GPU figures only when measured."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gpu_analysis.engine import cuda_check, gpu_usage
from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.gpu_usage import MIB, GpuSample, UsageRecorder, summarise
from gpu_analysis.engine.inference import OnnxDetector
from tests.engine import onnx_models

# What /proc/driver/nvidia/version holds on a GPU node (driver 570, as on the EKS AL2023 AMI).
DRIVER_VERSION_TEXT = (
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.124.06  Release Build  "
    "(dvs-builder@U16-I3-B03-4-3)  Tue Mar  4 01:12:49 UTC 2025\n"
    "GCC version:  gcc version 11.4.1 20230605 (Red Hat 11.4.1-2) (GCC)\n"
)


@pytest.fixture
def gpu_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A node whose driver is loaded: its /proc file, and a /dev to fill with device files."""
    version = tmp_path / "proc-driver-nvidia-version"
    version.write_text(DRIVER_VERSION_TEXT)
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "null").touch()
    monkeypatch.setattr(cuda_check, "DRIVER_VERSION_FILE", version)
    monkeypatch.setattr(cuda_check, "DEVICE_DIR", dev)
    monkeypatch.setattr(cuda_check, "WSL_GPU_DEVICE", tmp_path / "no-dxg")
    return dev


def test_cuda_without_a_driver_names_the_driver(tmp_path: Path) -> None:
    # This machine: onnxruntime-gpu lists CUDA, but no NVIDIA driver is loaded.
    model = onnx_models.brightness_heatmap_model(tmp_path / "m.onnx")
    with pytest.raises(UserError) as raised:
        OnnxDetector(model, device="cuda")
    assert str(raised.value) == (
        "device cuda: no NVIDIA driver is loaded (/proc/driver/nvidia/version is absent); run "
        "the step on a GPU node whose image has the NVIDIA driver (the EKS accelerated AMI)"
    )


def test_onnxruntime_without_cuda_names_the_package() -> None:
    missing = cuda_check.missing_before_session(["CPUExecutionProvider"])
    assert missing == (
        "onnxruntime-gpu is not installed (ONNX Runtime offers only CPUExecutionProvider); "
        "install onnxruntime-gpu[cuda,cudnn] in place of onnxruntime"
    )


def test_driver_without_a_visible_gpu_names_the_device_plugin(gpu_node, monkeypatch) -> None:
    monkeypatch.delenv("NVIDIA_VISIBLE_DEVICES", raising=False)
    assert cuda_check.driver_version() == "570.124.06"
    missing = cuda_check.missing_before_session(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert missing is not None and missing.startswith(
        "the NVIDIA driver is loaded but no GPU device is visible to this container "
        f"(no {gpu_node}/nvidia0; NVIDIA_VISIBLE_DEVICES unset); the pod needs an "
        "nvidia.com/gpu limit and the NVIDIA device plugin"
    )
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "void")
    missing = cuda_check.missing_before_session(["CUDAExecutionProvider"])
    assert "NVIDIA_VISIBLE_DEVICES='void'" in missing


def test_visible_gpu_without_the_driver_library_names_the_container_runtime(gpu_node) -> None:
    (gpu_node / "nvidiactl").touch()
    (gpu_node / "nvidia0").touch()
    assert cuda_check.gpu_device_files() == [str(gpu_node / "nvidia0")]
    # The dlopen is real: this machine has no libcuda.so.1.
    missing = cuda_check.missing_before_session(["CUDAExecutionProvider"])
    assert missing == (
        "a GPU is visible but the driver library libcuda.so.1 cannot be loaded (libcuda.so.1: "
        "cannot open shared object file: No such file or directory); run the container with "
        "the NVIDIA container runtime, which mounts it"
    )


def test_missing_cuda_runtime_library_is_named() -> None:
    # The CUDA provider library really fails to load here: its CUDA 13 libraries are absent.
    import onnxruntime as ort

    cuda_check.preload_cuda_libraries()  # finds no nvidia-* wheels here, and says nothing
    assert cuda_check.missing_cuda_library() == (
        f"the CUDA library libcublasLt.so.13 is missing (ONNX Runtime {ort.__version__} needs "
        "CUDA 13.0 and cuDNN 9); install onnxruntime-gpu[cuda,cudnn] or put the libraries on "
        "LD_LIBRARY_PATH"
    )


def test_auto_falls_back_to_the_cpu_quietly(tmp_path: Path, capfd) -> None:
    model = onnx_models.brightness_heatmap_model(tmp_path / "m.onnx")
    assert OnnxDetector(model, device="auto").execution_provider == "CPUExecutionProvider"
    # No CUDA session was attempted, so ONNX Runtime printed none of its load errors.
    assert "CUDAExecutionProvider" not in capfd.readouterr().err


def test_no_gpu_means_no_usage_and_no_metadata_keys() -> None:
    # Real NVML: on this machine it cannot start (no driver library).
    with gpu_usage.measure(interval_s=0.01) as recorder:
        pass
    assert recorder.device_name is None
    assert recorder.usage is None
    assert recorder.metadata() == {}


def test_usage_aggregates_samples_into_mean_max_and_peak_memory() -> None:
    samples = [GpuSample(10, 1000 * MIB), GpuSample(90, 3072 * MIB), GpuSample(50, 2000 * MIB)]
    usage = summarise("NVIDIA A10G", samples)
    assert usage.as_metadata() == {
        "gpu_utilisation_pct_mean": 50.0,
        "gpu_utilisation_pct_max": 90.0,
        "gpu_memory_peak_mib": 3072.0,
    }
    assert usage.samples == 3
    assert summarise("NVIDIA A10G", []) is None


class ScriptedDevice:
    """Stands in for NvmlDevice (the NVML reading itself is tested above, for real)."""

    name = "NVIDIA A10G"

    def __init__(self, readings: int):
        self.readings_left = readings
        self.read_count = 0
        self.fourth_read = threading.Event()

    def read(self) -> GpuSample:
        import pynvml

        if self.readings_left == 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        self.readings_left -= 1
        self.read_count += 1
        if self.read_count == 4:
            self.fourth_read.set()
        return GpuSample(20.0 * self.read_count, self.read_count * MIB)


def test_recorder_samples_at_start_during_and_at_the_end() -> None:
    device = ScriptedDevice(readings=100)
    recorder = UsageRecorder(device, interval_s=0.001)
    recorder.start()
    assert device.fourth_read.wait(5)
    recorder.stop()
    taken = len(recorder.samples)
    assert taken >= 5  # one at the start, three or more on the thread, one at the end
    assert recorder.usage.memory_peak_mib == taken and recorder.usage.utilisation_pct_max == (
        20.0 * taken
    )


def test_recorder_keeps_what_it_read_when_the_gpu_is_lost() -> None:
    recorder = UsageRecorder(ScriptedDevice(readings=2), interval_s=0.001)
    recorder.start()
    recorder._thread.join(5)  # the thread ends by itself at the failed third reading
    recorder.stop()
    assert [s.utilisation_pct for s in recorder.samples] == [20.0, 40.0]
    assert recorder.metadata()["gpu_memory_peak_mib"] == 2.0


def test_device_label_names_the_gpu_only_on_cuda() -> None:
    assert gpu_usage.device_label("CUDAExecutionProvider", "NVIDIA A10G") == (
        "CUDAExecutionProvider (NVIDIA A10G)"
    )
    assert gpu_usage.device_label("CPUExecutionProvider", "NVIDIA A10G") == ("CPUExecutionProvider")
