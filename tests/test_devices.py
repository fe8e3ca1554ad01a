"""GPU detection on a Jetson without nvidia-smi or cuda-python (issue 21 item 11).

JetPack 5/6 ships TensorRT and the CUDA runtime but no ``nvidia-smi``, and cuda-python is
often not installed: the device tree names the SoC (``/proc/device-tree/compatible``: L4T
"Jetson Module Adaptation and Bring-Up", e.g. ``nvidia,tegra234`` for Orin) and the GPU
driver is the ``nvgpu`` kernel module. Tested on a fake root directory.
"""

from __future__ import annotations

import pytest

from xception_trt.trt import builder as builder_mod
from xception_trt.trt import devices


def _jetson_root(tmp_path, *, soc="tegra234", driver=True):
    dt = tmp_path / "proc/device-tree"
    dt.mkdir(parents=True)
    (dt / "compatible").write_bytes(b"nvidia,p3737-0000+p3701-0005\0nvidia,p3701-0005\0"
                                    + f"nvidia,{soc}\0".encode())
    (dt / "model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")
    (tmp_path / "proc/meminfo").write_text("MemTotal:       64335836 kB\nMemFree: 1 kB\n")
    if driver:
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc/nv_tegra_release").write_text(
            "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, "
            "DATE: Fri Sep 13 04:36:44 UTC 2024\n")
        (tmp_path / "sys/module/nvgpu").mkdir(parents=True)
    return tmp_path


@pytest.fixture
def jetpack(monkeypatch):
    """A JetPack machine: neither cuda-python nor nvidia-smi can answer."""
    monkeypatch.setattr(devices, "_via_cuda_python", lambda: None)
    monkeypatch.setattr(devices, "_via_nvidia_smi", lambda: None)


def test_jetson_gpu_is_found_from_the_device_tree(tmp_path, monkeypatch, jetpack):
    monkeypatch.setattr(devices, "_ROOT", _jetson_root(tmp_path))
    report = devices.query_devices()
    assert report.probe == "tegra" and report.driver == "L4T R36.4.0"
    (gpu,) = report.gpus
    assert gpu.compute_capability == "8.7" and gpu.integrated and gpu.sm == "sm_87"
    assert gpu.name.startswith("NVIDIA Jetson AGX Orin") and gpu.total_memory == 64335836 << 10
    # ... so NVIDIA TensorRT builds here (the builder needs a GPU for it)
    assert builder_mod._build_gpu() == {"index": 0, "name": gpu.name,
                                        "compute_capability": "8.7", "integrated": True}


def test_build_on_a_gpu_that_is_not_there_is_refused(tmp_path, monkeypatch, jetpack):
    """Issue 26 item 5: the builder builds on the GPU asked for, so it says when there is no
    such GPU instead of building on another one."""
    from xception_trt.errors import BuildError

    monkeypatch.setattr(devices, "_ROOT", _jetson_root(tmp_path))
    with pytest.raises(BuildError, match=r"no GPU 1 here \(CUDA ordinals 0\)"):
        builder_mod._build_gpu(1)


@pytest.mark.parametrize("soc, cc", [("tegra194", "7.2"), ("tegra264", "11.0")])
def test_other_jetsons(tmp_path, monkeypatch, jetpack, soc, cc):
    monkeypatch.setattr(devices, "_ROOT", _jetson_root(tmp_path, soc=soc))
    assert devices.query_devices().gpus[0].compute_capability == cc


def test_jetson_without_its_gpu_driver_says_so(tmp_path, monkeypatch, jetpack):
    monkeypatch.setattr(devices, "_ROOT", _jetson_root(tmp_path, driver=False))
    report = devices.query_devices()
    assert not report.gpus and "without its GPU driver" in report.reason


def test_not_a_jetson(tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "_ROOT", tmp_path)
    assert devices._via_tegra() is None
    dt = tmp_path / "proc/device-tree"
    dt.mkdir(parents=True)
    (dt / "compatible").write_bytes(b"raspberrypi,5-model-b\0brcm,bcm2712\0")
    assert devices._via_tegra() is None


def test_a_probe_without_gpus_does_not_hide_a_later_one(tmp_path, monkeypatch):
    """cuda-python installed but unusable (e.g. built for a newer CUDA than JetPack's driver)
    must not hide the Jetson's GPU."""
    monkeypatch.setattr(devices, "_via_cuda_python",
                        lambda: devices.DeviceReport(None, None, (), "cuda-python", "cuInit "
                                                     "failed"))
    monkeypatch.setattr(devices, "_via_nvidia_smi", lambda: None)
    monkeypatch.setattr(devices, "_ROOT", _jetson_root(tmp_path))
    assert devices.query_devices().probe == "tegra"
    monkeypatch.setattr(devices, "_ROOT", tmp_path / "nothing")
    assert devices.query_devices().reason == "cuInit failed"


_SMI = ("0, NVIDIA GeForce RTX 3090, 8.6, 24576, 580.95.05, 00000000:65:00.0, GPU-aaaa-1111\n"
        "1, NVIDIA GeForce RTX 4090, 8.9, 24564, 580.95.05, 00000000:17:00.0, GPU-bbbb-2222\n")


@pytest.mark.parametrize("env, expected, uncertain", [
    # PCI order: CUDA numbers by bus id, whatever NVML's index says
    ({"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, ["RTX 4090", "RTX 3090"], False),
    # CUDA_VISIBLE_DEVICES (NVML ignores it): the listed GPUs, renumbered from 0, in list order
    ({"CUDA_VISIBLE_DEVICES": "GPU-aaaa"}, ["RTX 3090"], False),
    ({"CUDA_VISIBLE_DEVICES": "GPU-bbbb,GPU-aaaa"}, ["RTX 4090", "RTX 3090"], False),
    ({"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1"}, ["RTX 3090"], False),
    ({"CUDA_VISIBLE_DEVICES": "GPU-bbbb,nope,GPU-aaaa"}, ["RTX 4090"], False),  # stops there
    # default order (fastest first) with two GPUs: not knowable without CUDA: said so
    ({}, ["RTX 3090", "RTX 4090"], True),
    ({"CUDA_VISIBLE_DEVICES": "1"}, ["RTX 4090"], True),  # CUDA's 1: fastest-first, unknown
])
def test_nvidia_smi_gpus_get_cuda_ordinals(monkeypatch, env, expected, uncertain):
    """Issue 26 item 7: NVML's index "may not correlate with ... the CUDA device index" (NVML
    API reference) and NVML ignores CUDA_VISIBLE_DEVICES; CUDA numbers the visible devices in
    CUDA_DEVICE_ORDER order (CUDA C++ Programming Guide, "CUDA Environment Variables"). The
    nvidia-smi fallback applies those rules where they can be known and says when not."""
    import subprocess

    monkeypatch.setattr(devices.shutil, "which", lambda exe: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(devices.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 0, stdout=_SMI, stderr=""))
    report = devices._via_nvidia_smi(env)
    assert [g.name.removeprefix("NVIDIA GeForce ") for g in report.gpus] == expected
    assert [g.index for g in report.gpus] == list(range(len(expected)))
    assert report.gpus[0].pci_bus_id.startswith("00000000:")
    assert ("may not be CUDA's" in report.reason) is uncertain


def test_cuda_and_nvml_bus_ids_compare_equal():
    """cuDeviceGetPCIBusId gives a 4-digit domain, NVML an 8-digit one."""
    assert devices.normalise_bus_id("0000:65:00.0") == "00000000:65:00.0"
    assert devices.normalise_bus_id("00000000:65:00.0") == "00000000:65:00.0"
    assert devices.normalise_bus_id(None) is None and devices.normalise_bus_id("junk") is None
