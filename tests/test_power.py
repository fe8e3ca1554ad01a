"""Power sampling (Jetson INA3221 sysfs trees, an NVML double), run context, and power in bench
results and reports.

The sysfs trees are laid out as the documentation describes each Jetson (none was recorded on a
device):

- Orin NX / Orin Nano, JetPack 6 (L4T r36) and 5 (r35): one INA3221 at I2C 1-0040,
  ``/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon<x>/in{1,2,3}_label`` = VDD_IN,
  VDD_CPU_GPU_CV, VDD_SOC; ``in<k>_input`` mV, ``curr<k>_input`` mA; ``in7_label`` is the sum
  of shunt voltages. Jetson Linux Developer Guide r36.x, "Jetson Orin Nano Series, Jetson Orin
  NX Series and Jetson AGX Orin Series" (Platform Power and Performance; its power-monitor
  section), docs.nvidia.com/jetson/archives/r36.3/DeveloperGuide/SD/PlatformPowerAndPerformance/
  JetsonOrinNanoSeriesJetsonOrinNxSeriesAndJetsonAgxOrinSeries.html; attribute meanings and
  units from the kernel's Documentation/hwmon/ina3221.rst.
- AGX Orin: two INA3221, 1-0040 (VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0) and 1-0041 (NC,
  VDDQ_VDD2_1V8AO, NC); no module input rail. Same guide, "Jetson AGX Orin Series"
  (r34.1 page ...#jetson-agx-orin-series).
- Xavier NX, JetPack 5 (r35): one INA3221 at 7-0040, VDD_IN, VDD_CPU_GPU_CV, VDD_SOC. Jetson
  Linux Developer Guide r35.x, "Jetson Xavier NX Series and Jetson AGX Xavier Series".
- Xavier NX, JetPack 4 (L4T r32): NVIDIA's ina3221x IIO driver,
  ``/sys/bus/i2c/drivers/ina3221x/7-0040/iio:device0/rail_name_<k>``, ``in_power<k>_input``
  mW. L4T 32.7 Development Guide, "Power Management for Jetson Xavier NX Series and Jetson AGX
  Xavier Series" (docs.nvidia.com/jetson/archives/l4t-archived/l4t-3275/...).
- AGX Xavier, JetPack 5: 1-0040 (GPU, CPU, SOC) and 1-0041 (CV, VDDRQ, SYS5V); no module input
  rail (Jetson AGX Xavier design guide, "Power Monitor": top monitor GPU/CPU/SOC at 0x40,
  bottom CV/VDDRQ/SYS_VIN_MV at 0x41).
"""

from __future__ import annotations

import inspect
import threading
from pathlib import Path

import pytest

from xception_trt.bench import measure_latency
from xception_trt.power import PowerMonitor, open_monitor, run_context
from xception_trt.power.context import jetson_context
from xception_trt.power.jetson import find_rails
from xception_trt.power.nvml import NvmlSource, nvml_context
from xception_trt.power.sampler import mean_over_time

HWMON = "bus/i2c/drivers/ina3221"
IIO = "bus/i2c/drivers/ina3221x"

#: board -> (layout, {device: [(label, mV, mA) or (label, mW) ...]}, device-tree model)
BOARDS = {
    "orin-nx": ("hwmon", {"1-0040": [("VDD_IN", 5000, 1200), ("VDD_CPU_GPU_CV", 4992, 400),
                                     ("VDD_SOC", 4992, 300)]},
                "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"),
    "agx-orin": ("hwmon", {"1-0040": [("VDD_GPU_SOC", 19000, 300), ("VDD_CPU_CV", 19000, 100),
                                      ("VIN_SYS_5V0", 5000, 200)],
                           "1-0041": [("NC", 0, 0), ("VDDQ_VDD2_1V8AO", 5000, 100),
                                      ("NC", 0, 0)]},
                 "Jetson AGX Orin Developer Kit"),
    "xavier-nx": ("hwmon", {"7-0040": [("VDD_IN", 5000, 1000), ("VDD_CPU_GPU_CV", 5000, 300),
                                       ("VDD_SOC", 5000, 200)]},
                  "NVIDIA Jetson Xavier NX Developer Kit"),
    "xavier-nx-jp4": ("ina3221x", {"7-0040": [("VDD_IN", 5100), ("VDD_CPU_GPU_CV", 1200),
                                              ("VDD_SOC", 900)]},
                      "NVIDIA Jetson Xavier NX Developer Kit"),
    "agx-xavier": ("hwmon", {"1-0040": [("GPU", 19000, 100), ("CPU", 19000, 50),
                                        ("SOC", 19000, 60)],
                             "1-0041": [("CV", 19000, 0), ("VDDRQ", 19000, 20),
                                        ("SYS5V", 5000, 300)]},
                   "Jetson-AGX"),
}
EXPECTED = {  # rails kept, total rail, expected mean total W
    "orin-nx": (("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"), "VDD_IN", 6.0),
    "agx-orin": (("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"), None,
                 5.7 + 1.9 + 1.0 + 0.5),
    "xavier-nx": (("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"), "VDD_IN", 5.0),
    "xavier-nx-jp4": (("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"), "VDD_IN", 5.1),
    "agx-xavier": (("GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"), None,
                   1.9 + 0.95 + 1.14 + 0.0 + 0.38 + 1.5),
}


def make_board(root: Path, board: str) -> tuple[Path, Path]:
    """A sysfs tree (``root/sys``) and device-tree model file for ``board``; returns both."""
    layout, devices, model = BOARDS[board]
    sys = root / "sys"
    for n, (dev, channels) in enumerate(devices.items()):
        if layout == "hwmon":
            d = sys / HWMON / dev / "hwmon" / f"hwmon{n + 1}"
            d.mkdir(parents=True)
            (d / "name").write_text("ina3221\n")
            for k, (label, mv, ma) in enumerate(channels, start=1):
                (d / f"in{k}_label").write_text(label + "\n")
                (d / f"in{k}_input").write_text(f"{mv}\n")
                (d / f"curr{k}_input").write_text(f"{ma}\n")
                (d / f"in{k + 3}_input").write_text("40\n")  # shunt voltage, uV: not a rail
            (d / "in7_label").write_text("sum of shunt voltages\n")
            (d / "in7_input").write_text("120\n")
        else:
            d = sys / IIO / dev / "iio:device0"
            d.mkdir(parents=True)
            for k, (label, mw) in enumerate(channels):
                (d / f"rail_name_{k}").write_text(label + "\n")
                (d / f"in_power{k}_input").write_text(f"{mw}\n")
                (d / f"in_voltage{k}_input").write_text("5000\n")
                (d / f"in_current{k}_input").write_text(f"{mw * 1000 // 5000}\n")
    model_file = root / "proc/device-tree/model"
    model_file.parent.mkdir(parents=True)
    model_file.write_bytes(model.encode() + b"\x00")
    return sys, model_file


class NoNvml:
    """A pynvml without a driver (nvmlInit fails, as on a machine without libnvidia-ml)."""

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's name
        pass

    @classmethod
    def nvmlInit(cls):  # noqa: N802 - pynvml's names
        raise cls.NVMLError("NVML Shared Library Not Found")


@pytest.mark.parametrize("board", list(BOARDS))
def test_each_jetson_layout_is_found_and_measured(tmp_path, board):
    sys, model = make_board(tmp_path, board)
    rails, total_rail, total_w = EXPECTED[board]
    with open_monitor(sysfs=sys, model_file=model, nvml=NoNvml, use_jtop=False,
                      period_s=0.01) as mon:
        assert mon.available and mon.source is not None
        assert mon.source.rails == rails
        assert mon.source.total_rail == total_rail
        reading = mon.start().stop()
        notes = " ".join(mon.describe()["notes"])
    assert reading.available and reading.samples >= 2 and reading.failed_reads == 0
    assert reading.total_w == pytest.approx(total_w)
    if total_rail is None:  # AGX Xavier / AGX Orin: no input rail, and the report says so
        assert "no module input-power rail" in notes
        assert "lower bound" in reading.total_basis
    else:
        assert reading.total_basis.startswith(total_rail)
    d = reading.to_dict(images=100)
    assert d["energy_per_image_mj"] == pytest.approx(1000 * reading.energy_j / 100, rel=1e-3)
    assert d["energy_j"] == pytest.approx(total_w * reading.duration_s, rel=1e-3)


def test_rails_with_garbage_or_unreadable_files_are_left_out_with_the_reason(tmp_path):
    sys, model = make_board(tmp_path, "orin-nx")
    hw = sys / HWMON / "1-0040/hwmon/hwmon1"
    (hw / "curr2_input").write_text("n/a\n")
    (hw / "in3_input").unlink()
    layout, rails, problems = find_rails(sys)
    assert layout == "hwmon" and [r.name for r in rails] == ["VDD_IN"]
    assert any("VDD_CPU_GPU_CV" in p and "not a number" in p for p in problems)
    assert any("VDD_SOC" in p and "in3_input" in p for p in problems)
    (hw / "in1_input").write_text("\n")
    mon = open_monitor(sysfs=sys, model_file=model, nvml=NoNvml, use_jtop=False)
    assert not mon.available and "none readable" in mon.reason


def test_units_suffix_is_accepted(tmp_path):
    sys, _ = make_board(tmp_path, "orin-nx")
    (sys / HWMON / "1-0040/hwmon/hwmon1/curr1_input").write_text("1200 mA\n")
    _, rails, problems = find_rails(sys)
    assert len(rails) == 3 and not problems


def test_a_file_vanishing_or_turning_to_garbage_mid_sampling_is_counted_not_fatal(tmp_path):
    sys, model = make_board(tmp_path, "orin-nx")
    hw = sys / HWMON / "1-0040/hwmon/hwmon1"
    mon = open_monitor(sysfs=sys, model_file=model, nvml=NoNvml, use_jtop=False, period_s=5)
    window = mon.start()  # the first sample reads every rail
    (hw / "curr1_input").unlink()  # VDD_IN vanishes (device unbound)
    (hw / "in2_input").write_text("garbage")
    reading = window.stop()  # the closing sample fails on both
    assert reading.available and reading.samples == 2 and reading.failed_reads == 2
    assert reading.rails_w["VDD_IN"] == pytest.approx(6.0)  # from the good sample only
    assert reading.rails_w["VDD_SOC"] == pytest.approx(4.992 * 0.3)
    notes = " ".join(reading.notes)
    assert "read failures" in notes and "curr1_input" in notes and "not a number" in notes
    assert window.stop() is reading  # idempotent


def test_the_thread_samples_at_its_period_until_stopped(tmp_path):
    class Counting:
        name, rails, total_rail, scope, notes = "test", ("R",), "R", "module", ()

        def __init__(self):
            self.calls = 0
            self.enough = threading.Event()

        def read_mw(self):
            self.calls += 1
            if self.calls >= 5:
                self.enough.set()
            return [1000.0 * self.calls]

        def energy_mj(self):
            return None

        def errors(self):
            return []

        def close(self):
            pass

    src = Counting()
    window = PowerMonitor(src, period_s=0.002).start()
    assert src.enough.wait(120), "the sampler thread did not sample"  # limit: a hang only
    reading = window.stop()
    calls = src.calls
    assert reading.samples == calls >= 5 and reading.sampler_busy_ms >= 0
    assert not any(t.name == "xception-trt-power" and t.is_alive()
                   for t in threading.enumerate())
    assert 1.0 <= reading.total_w <= calls  # a mean of the rising 1..calls W samples


def test_mean_over_time_weights_by_duration():
    assert mean_over_time([0.0, 1.0, 3.0], [2.0, 2.0, 4.0]) == pytest.approx((2 + 6) / 3)
    assert mean_over_time([5.0], [7.0]) == 7.0


def test_monitor_rejects_bad_settings():
    from xception_trt.errors import ConfigError

    with pytest.raises(ConfigError, match="period"):
        PowerMonitor(None, reason="x", period_s=0)
    with pytest.raises(ConfigError, match="reason"):
        PowerMonitor(None)


# ---------------------------------------------------------------------------------------------
# NVML


class FakeNvml:
    """An NVML double: a GPU with an energy counter (or not), answering with pynvml's names."""

    NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's name
        pass

    def __init__(self, *, energy=True, power=True, persistence=True):
        self.energy_mj = 1_000_000
        self.power_mw = 250_000
        self.has_energy, self.has_power, self.has_persistence = energy, power, persistence
        self.initialised = 0

    def nvmlInit(self):  # noqa: N802 - the double's names are pynvml's
        self.initialised += 1

    def nvmlShutdown(self):  # noqa: N802
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self):  # noqa: N802
        return "580.00"

    def nvmlDeviceGetCount(self):  # noqa: N802
        return 1

    def nvmlDeviceGetHandleByIndex(self, index):  # noqa: N802
        return ("h", index)

    #: NVML's second GPU sits at this PCI bus id (NVML's index is not CUDA's ordinal)
    BUSES = {"00000000:17:00.0": 0, "00000000:65:00.0": 1}

    def nvmlDeviceGetHandleByPciBusId(self, pciBusId):  # noqa: N802, N803 - pynvml's names
        if pciBusId not in self.BUSES:
            raise self.NVMLError("Not Found")
        return ("h", self.BUSES[pciBusId])

    def nvmlDeviceGetName(self, handle):  # noqa: N802
        return "NVIDIA Test GPU" if handle[1] == 0 else "NVIDIA Second GPU"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):  # noqa: N802
        if not self.has_energy:
            raise self.NVMLError_NotSupported("Not Supported")
        self.energy_mj += 500  # 0.5 J per query
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, handle):  # noqa: N802
        if not self.has_power:
            raise self.NVMLError_NotSupported("Not Supported")
        return self.power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):  # noqa: N802
        return 300_000

    def nvmlDeviceGetPersistenceMode(self, handle):  # noqa: N802
        if not self.has_persistence:
            raise self.NVMLError_NotSupported("Not Supported")
        return 1

    def nvmlDeviceGetClockInfo(self, handle, type):  # noqa: N802, A002 - pynvml's parameter
        return {0: 1500, 1: 1500, 2: 9000}[type]

    def nvmlDeviceGetMaxClockInfo(self, handle, type):  # noqa: N802, A002
        return {0: 2100, 1: 2100, 2: 9500}[type]

    def nvmlDeviceGetPerformanceState(self, handle):  # noqa: N802
        return 2


def test_the_nvml_double_uses_real_nvidia_ml_py_names_and_arities():
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is in the [power] extra")
    names = [n for n in vars(FakeNvml) if n.startswith(("nvml", "NVML"))]
    assert len(names) >= 15
    for name in names:
        assert hasattr(pynvml, name), f"pynvml has no {name}"
        ours = getattr(FakeNvml, name)
        if callable(ours) and not isinstance(ours, type):
            theirs = getattr(pynvml, name)
            n_ours = len(inspect.signature(ours).parameters) - 1  # self
            assert n_ours == len(inspect.signature(theirs).parameters), name
    assert issubclass(pynvml.NVMLError_NotSupported, pynvml.NVMLError)
    assert (pynvml.NVML_CLOCK_GRAPHICS, pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_MEM) == (0, 1, 2)


def test_nvml_energy_counter_gives_the_energy(tmp_path):
    nvml = FakeNvml()
    with open_monitor(sysfs=tmp_path, nvml=nvml, use_jtop=False, period_s=5) as mon:
        assert mon.source is not None and mon.source.name == "nvml"
        reading = mon.start().stop()
        notes = " ".join(mon.describe()["notes"])
    assert nvml.initialised == 0  # shut down on close
    assert reading.energy_basis == "hardware energy counter"
    assert reading.energy_j == pytest.approx(0.5)  # one counter query later: +500 mJ
    assert reading.rails_w == {"GPU 0": 250.0} and reading.total_w == 250.0
    assert "GPU board only" in notes


def test_nvml_measures_the_cuda_device_found_by_its_pci_bus_id(tmp_path):
    """Issue 26 item 7: "The NVML index may not correlate with other APIs, such as the CUDA
    device index" (NVML API reference, nvmlDeviceGetHandleByIndex), and NVML ignores
    CUDA_VISIBLE_DEVICES: the monitor finds the runner's GPU by its PCI bus id, not by
    taking the CUDA ordinal as an NVML index."""
    with open_monitor(sysfs=tmp_path, nvml=FakeNvml(), use_jtop=False, period_s=5,
                      pci_bus_id="00000000:65:00.0") as mon:
        assert mon.source.gpu == "NVIDIA Second GPU"
        assert "GPU at PCI 00000000:65:00.0" in mon.source.rails
    with open_monitor(sysfs=tmp_path, nvml=FakeNvml(), use_jtop=False, period_s=5,
                      pci_bus_id="00000000:99:00.0") as mon:
        assert mon.source is None and "no GPU at PCI bus id 00000000:99:00.0" in mon.reason


def test_bench_asks_nvml_for_the_gpu_its_runners_use(monkeypatch):
    """Issue 26 item 7: bench measures CUDA device 0's power: its bus id, from the device
    probe, goes to NVML."""
    from xception_trt import sysinfo
    from xception_trt.cli import bench as bench_cli
    from xception_trt.trt import devices

    gpus = (devices.GpuInfo(0, "NVIDIA Second GPU", "8.9", 1, pci_bus_id="00000000:65:00.0"),
            devices.GpuInfo(1, "NVIDIA Test GPU", "8.6", 1, pci_bus_id="00000000:17:00.0"))
    monkeypatch.setattr(sysinfo, "devices",
                        lambda: devices.DeviceReport("580.00", "13.0", gpus, "test"))
    assert bench_cli._cuda_gpu_bus_id(0) == "00000000:65:00.0"


def test_nvml_without_energy_counter_falls_back_to_power_samples(tmp_path):
    mon = PowerMonitor(NvmlSource(nvml=FakeNvml(energy=False)), period_s=5)
    reading = mon.start().stop()
    assert reading.energy_basis == "mean total power x window"
    assert reading.energy_j == pytest.approx(250.0 * reading.duration_s)
    assert "NVML_ERROR_NOT_SUPPORTED" in " ".join(mon.describe()["notes"])


def test_nvml_supporting_neither_is_a_reason_not_an_error(tmp_path):
    mon = open_monitor(sysfs=tmp_path, nvml=FakeNvml(energy=False, power=False),
                       use_jtop=False)
    assert not mon.available
    assert "not a Jetson" in mon.reason and "NOT_SUPPORTED" in mon.reason
    reading = mon.start().stop()
    assert not reading.available and reading.reason == mon.reason
    mon = open_monitor(sysfs=tmp_path, nvml=NoNvml, use_jtop=False)
    assert "NVML did not start: NVML Shared Library Not Found" in mon.reason


def test_nvml_context_reports_clocks_limits_and_unsupported_queries():
    ctx = nvml_context(nvml=FakeNvml(persistence=False))
    assert ctx["available"] and ctx["driver"] == "580.00"
    (gpu,) = ctx["gpus"]
    assert gpu["clocks_mhz"] == {"graphics": 1500, "sm": 1500, "memory": 9000}
    assert gpu["max_clocks_mhz"]["sm"] == 2100 and gpu["power_limit_w"] == 300.0
    assert gpu["persistence_mode"] is None and gpu["performance_state"] == "P2"
    assert "NOT_SUPPORTED" in gpu["unsupported"]["persistence_mode"]
    assert nvml_context(nvml=NoNvml)["reason"].startswith("NVML did not start")


# ---------------------------------------------------------------------------------------------
# context


def _jetson_root(tmp_path: Path, *, pinned: bool) -> Path:
    make_board(tmp_path, "orin-nx")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 4.3, GCID: 0, BOARD: generic, EABI: aarch64\n")
    (tmp_path / "etc/nvpmodel.conf").write_text(
        "< POWER_MODEL ID=0 NAME=MAXN >\nCPU_ONLINE CORE_0 1\n"
        "< POWER_MODEL ID=2 NAME=15W >\nCPU_ONLINE CORE_0 1\n")
    (tmp_path / "var/lib/nvpmodel").mkdir(parents=True)
    (tmp_path / "var/lib/nvpmodel/status").write_text("pmode:0002 fmode:quiet\n")
    gpu = tmp_path / "sys/class/devfreq/17000000.ga10b"
    gpu.mkdir(parents=True)
    for key, hz in (("cur", 918000000), ("min", 918000000 if pinned else 306000000),
                    ("max", 918000000)):
        (gpu / f"{key}_freq").write_text(f"{hz}\n")
    (gpu / "governor").write_text("nvhost_podgov\n")
    for i in range(2):
        f = tmp_path / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        f.mkdir(parents=True)
        (f / "scaling_governor").write_text("schedutil\n")
        (f / "scaling_cur_freq").write_text("1984000\n")
        (f / "scaling_min_freq").write_text("1984000\n" if pinned else "729600\n")
        (f / "scaling_max_freq").write_text("1984000\n")
    return tmp_path


@pytest.mark.parametrize("pinned", [True, False])
def test_jetson_context_from_a_recorded_tree(tmp_path, pinned):
    root = _jetson_root(tmp_path, pinned=pinned)
    ctx = jetson_context(root)
    assert ctx["model"].startswith("NVIDIA Jetson Orin NX")  # the NUL terminator is gone
    assert ctx["l4t"].startswith("R36 (release), REVISION: 4.3")
    assert ctx["nvpmodel"]["name"] == "15W" and ctx["nvpmodel"]["id"] == 2
    assert ctx["gpu_devfreq"]["cur_mhz"] == 918.0 and ctx["gpu_devfreq"]["device"].endswith(
        "ga10b")
    assert ctx["jetson_clocks"].startswith("on" if pinned else "off")
    assert ctx["emc"]["cur_mhz"] is None and "root" in ctx["emc"]["reason"]
    full = run_context(root=root)
    assert full["cpu"]["governors"] == {"schedutil": 2}
    assert full["cpu"]["cur_freq_mhz"] == {"min": 1984.0, "max": 1984.0}
    assert "Jetson" in full["nvml"]["reason"]


def test_context_elsewhere_says_what_is_missing(tmp_path):
    ctx = run_context(root=tmp_path, nvml=NoNvml)
    assert ctx["jetson"] is None and "no cpufreq" in ctx["cpu"]["reason"]
    assert not ctx["nvml"]["available"] and ctx["nvml"]["reason"]
    assert ctx["load_average"] is None or len(ctx["load_average"]) == 3


# ---------------------------------------------------------------------------------------------
# in bench results and reports


@pytest.fixture()
def ort_runner(tiny_onnx_files):
    pytest.importorskip("onnxruntime")
    from xception_trt.runners import OnnxRuntimeRunner

    with OnnxRuntimeRunner(tiny_onnx_files["float"], threads=1) as r:
        yield r


def test_measure_latency_carries_power_on_a_jetson_tree(tmp_path, ort_runner):
    sys, model = make_board(tmp_path, "orin-nx")
    with open_monitor(sysfs=sys, model_file=model, nvml=NoNvml, use_jtop=False,
                      period_s=0.01) as mon:
        res = measure_latency(ort_runner, 2, iterations=3, warmup=1, power=mon)
    p = res.to_dict()["power"]
    assert p["available"] and p["samples"] >= 2 and p["images"] == 6
    assert p["energy_per_image_mj"] == pytest.approx(1000 * 6.0 * p["duration_s"] / 6, rel=0.01)


def test_measure_latency_cpu_runner_gets_no_energy_from_the_gpu(tmp_path, ort_runner):
    with open_monitor(sysfs=tmp_path, nvml=FakeNvml(), use_jtop=False, period_s=5) as mon:
        p = measure_latency(ort_runner, 1, iterations=2, warmup=0, power=mon).power
    assert p["available"] and p["energy_j"] is not None and p["energy_per_image_mj"] is None
    assert "not its energy" in " ".join(p["notes"])


def test_bench_cli_report_has_power_and_context_reasons_here(tiny_onnx_files, tmp_path):
    """The real bench on this machine (no Jetson rails; NVML without a driver or not installed):
    every latency entry carries the reason, and the context is recorded."""
    from xception_trt.cli import main
    from xception_trt.report import load_report

    out = tmp_path / "reports"
    assert main(["bench", str(tiny_onnx_files["float"]), "--batch", "1", "--iterations", "2",
                 "--warmup", "0", "--threads", "1", "--out-dir", str(out), "--name", "p",
                 "--no-progress"]) == 0
    doc = load_report(out / "p")
    here = open_monitor(use_jtop=False)
    if here.available:  # pragma: no cover - a machine with rails or a GPU
        pytest.skip(f"this machine can measure power ({here.source.name})")
    assert doc["power"]["available"] is False and "power: not available" in doc["power"]["reason"]
    (entry,) = doc["runners"]
    assert all(r["power"]["available"] is False and r["power"]["reason"] == doc["power"]["reason"]
               for r in entry["latency"])
    assert set(doc["context"]) >= {"load_average", "cpu", "jetson", "nvml"}
    md = (out / "p" / "report.md").read_text()
    assert "## Run context" in md and "Load average before the runs" in md
    assert "## Power and energy" in md and "\nPower: not available — no INA3221" in md
    assert not (out / "p" / "latency_vs_energy.png").exists()


def test_report_renders_power_tables_and_the_energy_plot(tmp_path, ort_runner):
    from xception_trt.bench import BenchConfig, benchmark_runner
    from xception_trt.report import build_report, write_report

    sys, model = make_board(tmp_path, "agx-orin")
    with open_monitor(sysfs=sys, model_file=model, nvml=NoNvml, use_jtop=False,
                      period_s=0.01) as mon:
        b = benchmark_runner(ort_runner, BenchConfig(batch_sizes=(1, 2), iterations=2, warmup=0),
                             power=mon)
        doc = build_report("e", kind="bench", benchmarks=[b], system={"cpu": "t"},
                           context=run_context(root=_jetson_root(tmp_path / "j", pinned=True)),
                           power=mon.describe())
    pytest.importorskip("matplotlib")
    files = write_report(doc, tmp_path / "reports")
    md = files.markdown.read_text()
    assert "| VDD_GPU_SOC W | VDD_CPU_CV W | VIN_SYS_5V0 W | VDDQ_VDD2_1V8AO W |" in md
    assert "mJ / image" in md and "lower bound" in md and "no module input-power rail" in md
    assert "Power mode (nvpmodel) | 15W (id 2)" in md and "jetson_clocks | on" in md
    png = files.directory / "latency_vs_energy.png"
    assert png in files.plots and png.read_bytes()[:4] == b"\x89PNG"


def test_bench_cli_no_power_says_so(tiny_onnx_files, tmp_path):
    from xception_trt.cli import main
    from xception_trt.report import load_report

    out = tmp_path / "reports"
    assert main(["bench", str(tiny_onnx_files["float"]), "--batch", "1", "--iterations", "1",
                 "--warmup", "0", "--threads", "1", "--out-dir", str(out), "--name", "n",
                 "--no-power", "--no-progress"]) == 0
    doc = load_report(out / "n")
    assert doc["power"] == {"available": False, "backend": None,
                            "reason": "power: not measured (--no-power)"}
    assert doc["runners"][0]["latency"][0]["power"]["reason"] == doc["power"]["reason"]


class FakeJtop:
    """A jetson-stats client double: ``power`` as jtop 4.x documents it."""

    interval = 0.5

    def __init__(self):
        self.power = {"rail": {"VDD_CPU_GPU_CV": {"power": 1500, "volt": 5000, "curr": 300},
                               "VDD_SOC": {"power": 900}},
                      "tot": {"power": 5000, "name": "VDD_IN"}}
        self.closed = False

    def close(self):
        self.closed = True


def test_jetson_stats_source_reads_rails_and_total():
    from xception_trt.power.jetson import JtopSource

    client = FakeJtop()
    src = JtopSource(client)
    assert src.rails == ("VDD_CPU_GPU_CV", "VDD_SOC", "total") and src.total_rail == "total"
    window = PowerMonitor(src, period_s=5).start()
    client.power["rail"]["VDD_SOC"] = {}  # a rail jtop stopped reporting
    reading = window.stop()
    assert reading.total_w == pytest.approx(5.0) and reading.failed_reads == 1
    assert reading.rails_w["VDD_SOC"] == pytest.approx(0.9)
    assert "VDD_SOC: jtop gave no power reading" in " ".join(reading.notes)
    src.close()
    assert client.closed


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e308", "-5"])
def test_implausible_readings_are_failed_reads_not_report_values(tmp_path, text):
    """Issue 27 item 19: a sysfs rail reading nan, inf, 1e308 or a negative number (float()
    parses them all) reached report.json as NaN / -Infinity, which is not valid JSON (RFC 8259
    has no NaN): such a reading now counts as a failed read."""
    import json

    sys, model = make_board(tmp_path, "orin-nx")
    hw = sys / HWMON / "1-0040/hwmon/hwmon1"
    mon = open_monitor(sysfs=sys, model_file=model, nvml=NoNvml, use_jtop=False, period_s=5)
    window = mon.start()  # the first sample reads every rail
    (hw / "in2_input").write_text(f"{text}\n")  # VDD_CPU_GPU_CV's voltage turns implausible
    reading = window.stop()
    assert reading.failed_reads == 1
    d = reading.to_dict(images=10)
    json.dumps(d, allow_nan=False)  # raises ValueError on NaN / Infinity
    assert reading.rails_w["VDD_SOC"] == pytest.approx(4.992 * 0.3)  # untouched rail


def test_cpu_context_skips_folders_that_are_not_cpus(tmp_path):
    """Issue 27 item 19: cpu_context sorted cpu folders with an unguarded int() of the name
    (a `cpu0x` folder raised ValueError)."""
    from xception_trt.power.context import cpu_context

    root = _jetson_root(tmp_path, pinned=True)
    (root / "sys/devices/system/cpu/cpu0x/cpufreq").mkdir(parents=True)
    (root / "sys/devices/system/cpu/cpu1²").mkdir(parents=True)
    out = cpu_context(root)
    assert out["governors"] == {"schedutil": 2}
