"""Tests with teeth for power/ (issue 31): rails with the same label on two monitors are told
apart; sysfs units give known physical values (5000 mV x 1200 mA = 6000 mW); a failed read
counts once per rail; an energy counter that did not advance means 0 J from the counter, one that
went backwards (a reset) falls back to mean power x time; NVML's GPU index must be below the
count. Windows use a long sampling period, so each has exactly the opening and closing sample.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from xception_trt.power import PowerMonitor
from xception_trt.power.jetson import Ina3221Source, find_rails
from xception_trt.power.nvml import NvmlSource, NvmlUnavailable
from xception_trt.power.sampler import mean_over_time, plausible_mw

HWMON = Path("bus/i2c/drivers/ina3221")


def _monitor(root: Path, dev: str, channels: dict[int, tuple[str, str, str]]) -> None:
    """One INA3221 (hwmon layout): channel k -> (label, mV, mA)."""
    hw = root / HWMON / dev / "hwmon" / f"hwmon{dev[-1]}"
    hw.mkdir(parents=True)
    for k, (label, mv, ma) in channels.items():
        (hw / f"in{k}_label").write_text(label + "\n")
        (hw / f"in{k}_input").write_text(mv + "\n")
        (hw / f"curr{k}_input").write_text(ma + "\n")


def test_the_same_rail_label_on_two_monitors_is_told_apart(tmp_path):
    _monitor(tmp_path, "1-0040", {1: ("VDD_GPU", "5000", "1200"), 2: ("VDD_IN", "5000", "3000")})
    _monitor(tmp_path, "1-0041", {1: ("VDD_GPU", "5000", "400"), 2: ("NC", "0", "0")})
    layout, rails, problems = find_rails(tmp_path)
    assert layout == "hwmon" and problems == []
    assert [r.name for r in rails] == ["VDD_GPU", "VDD_IN", "VDD_GPU@1-0041"]
    assert [r.device for r in rails] == ["1-0040", "1-0040", "1-0041"]
    src = Ina3221Source(rails)
    assert src.rails == ("VDD_GPU", "VDD_IN", "VDD_GPU@1-0041") and src.total_rail == "VDD_IN"
    # mV x mA / 1000 = mW: 5 V at 1.2 A is 6 W
    assert src.read_mw() == [6000.0, 15000.0, 2000.0]


def test_a_rail_label_seen_three_times_gets_three_names(tmp_path):
    for i, dev in enumerate(("1-0040", "1-0041", "1-0042")):
        _monitor(tmp_path, dev, {1: ("VDD_SOC", "1000", str(100 * (i + 1)))})
    _, rails, _ = find_rails(tmp_path)
    assert [r.name for r in rails] == ["VDD_SOC", "VDD_SOC@1-0041", "VDD_SOC@1-0042"]
    assert Ina3221Source(rails).read_mw() == [100.0, 200.0, 300.0]


class Rails:
    """A power source double: rails with fixed readings; ``fail_first`` makes the first read
    raise (a vanished sysfs file); ``energy`` is the sequence of counter values (mJ)."""

    name, scope, notes = "double", "module", ()

    def __init__(self, rails, values, *, total=None, fail_first=False, energy=None):
        self.rails, self.total_rail = tuple(rails), total
        self._values, self._fail = list(values), fail_first
        self._energy = list(energy) if energy is not None else None

    def read_mw(self):
        if self._fail:
            self._fail = False
            raise OSError("No such file or directory")
        return list(self._values)

    def energy_mj(self):
        return None if self._energy is None else self._energy.pop(0)

    def errors(self):
        return []

    def close(self):
        pass


def _window(source):
    mon = PowerMonitor(source, period_s=10.0)
    return mon.start().stop()


def test_a_failed_read_counts_once_per_rail():
    r = _window(Rails(("A", "B", "C"), [1000.0, None, 3000.0], fail_first=True))
    # the opening read failed (3 rails), the closing one lacked B (1)
    assert r.samples == 1 and r.failed_reads == 4
    assert r.rails_w == {"A": 1.0, "B": None, "C": 3.0}
    clean = _window(Rails(("A", "B", "C"), [1000.0, 2000.0, 3000.0]))
    assert clean.samples == 2 and clean.failed_reads == 0
    assert clean.total_w == pytest.approx(6.0)  # no input rail: the sum of the rails
    assert "sum of the rails A + B + C" in clean.total_basis


def test_an_energy_counter_that_did_not_advance_is_zero_joules_from_the_counter():
    r = _window(Rails(("VDD_IN",), [5000.0], total="VDD_IN", energy=[7000.0, 7000.0]))
    assert r.energy_j == 0.0 and r.energy_basis == "hardware energy counter"
    assert r.total_w == pytest.approx(5.0)


def test_an_advancing_counter_gives_its_difference_in_joules():
    r = _window(Rails(("VDD_IN",), [5000.0], total="VDD_IN", energy=[7000.0, 9500.0]))
    assert r.energy_j == pytest.approx(2.5) and r.energy_basis == "hardware energy counter"
    # only a counter (no power rail): the mean power is the counter over the window
    only = _window(Rails((), [], energy=[1000.0, 4000.0]))
    assert only.energy_j == pytest.approx(3.0)
    assert only.total_w == pytest.approx(3.0 / only.duration_s)
    assert only.total_basis == "energy counter / window"


def test_a_counter_that_went_backwards_falls_back_to_mean_power_times_window():
    r = _window(Rails(("VDD_IN",), [5000.0], total="VDD_IN", energy=[7000.0, 6000.0]))
    assert r.energy_basis == "mean total power x window"
    assert r.energy_j == pytest.approx(5.0 * r.duration_s)
    bad = _window(Rails(("VDD_IN",), [5000.0], total="VDD_IN",
                        energy=[float("nan"), 6000.0]))
    assert bad.energy_basis == "mean total power x window"


def test_energy_per_image_is_millijoules():
    r = _window(Rails(("VDD_IN",), [5000.0], total="VDD_IN", energy=[0.0, 2000.0]))
    d = r.to_dict(images=4)
    assert d["energy_j"] == pytest.approx(2.0) and d["energy_per_image_mj"] == pytest.approx(500)
    assert r.to_dict(images=0)["energy_per_image_mj"] is None


def test_mean_over_time_weights_by_time_and_plausible_limits():
    assert mean_over_time([0.0, 1.0, 3.0], [1.0, 3.0, 3.0]) == pytest.approx(8 / 3)
    assert mean_over_time([2.0], [7.0]) == 7.0
    assert mean_over_time([1.0, 1.0], [2.0, 4.0]) == 3.0  # no time span: plain mean
    assert plausible_mw(0) == 0.0 and plausible_mw(1e7) == 1e7
    for bad in (-0.001, 1e7 + 1, float("nan"), float("inf"), "x", None):
        assert plausible_mw(bad) is None


# ---------------------------------------------------------------------------------------------
# NVML: the GPU index


class TwoGpuNvml:
    """An NVML double with two GPUs (pynvml's names), power and an energy counter."""

    class NVMLError(Exception):
        pass

    def nvmlInit(self):  # noqa: N802 - pynvml's names
        pass

    def nvmlShutdown(self):  # noqa: N802
        pass

    def nvmlDeviceGetCount(self):  # noqa: N802
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):  # noqa: N802
        if not 0 <= index < 2:
            raise self.NVMLError("Invalid Argument")
        return ("h", index)

    def nvmlDeviceGetName(self, handle):  # noqa: N802
        return f"GPU{handle[1]}".encode()

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):  # noqa: N802
        return 1000 * (handle[1] + 1)

    def nvmlDeviceGetPowerUsage(self, handle):  # noqa: N802
        return 100_000 * (handle[1] + 1)


@pytest.mark.parametrize("index, ok", [(0, True), (1, True), (2, False), (3, False)])
def test_nvml_gpu_index_must_be_below_the_count(index, ok):
    if ok:
        src = NvmlSource(index=index, nvml=TwoGpuNvml())
        assert src.gpu == f"GPU{index}" and src.rails == (f"GPU {index}",)
        assert src.read_mw() == [100_000.0 * (index + 1)]
        assert src.energy_mj() == 1000.0 * (index + 1)
    else:
        with pytest.raises(NvmlUnavailable, match=rf"NVML sees 2 GPU\(s\), no GPU {index}"):
            NvmlSource(index=index, nvml=TwoGpuNvml())


# ---------------------------------------------------------------------------------------------
# jetson: both sysfs layouts, disabled and unreadable channels, jtop


IIO = Path("bus/i2c/drivers/ina3221x")


def test_hwmon_skips_disabled_not_connected_and_unreadable_channels(tmp_path):
    _monitor(tmp_path, "1-0040", {1: ("VDD_IN", "5000 mV", "2000 mA"),  # units printed
                                  2: ("VDD_CPU", "5000", "100"), 3: ("nc", "1", "1")})
    hw = tmp_path / HWMON / "1-0040" / "hwmon" / "hwmon0"
    (hw / "in2_enable").write_text("0\n")          # channel 2 switched off
    (hw / "in4_label").write_text("SHUNT\n")       # in4..in7 are not rails
    _monitor(tmp_path, "1-0041", {1: ("VDD_GPU", "5000", "garbage"), 2: ("VDD_SOC", "", "1")})
    layout, rails, problems = find_rails(tmp_path)
    assert layout == "hwmon" and [r.name for r in rails] == ["VDD_IN"]
    assert rails[0].files == (str(hw / "in1_input"), str(hw / "curr1_input"))
    assert len(problems) == 2
    assert problems[0].startswith("rail VDD_GPU on 1-0041: ")
    assert "holds 'garbage', not a number" in problems[0]
    assert problems[1].startswith("rail VDD_SOC on 1-0041: ") and "holds '', not a number" in (
        problems[1])
    src = Ina3221Source(rails, layout="hwmon", model="Orin NX")
    assert src.read_mw() == [10000.0] and src.name == "jetson-ina3221-hwmon"
    assert src.scope == "module" and src.energy_mj() is None
    assert src.notes == ("VDD_IN is the module's input: it includes CPU, GPU, memory and the "
                         "idle floor, not only the inference",)


def test_a_rail_that_vanishes_reads_none_and_records_the_first_errors(tmp_path):
    _monitor(tmp_path, "1-0040", {1: ("VDD_GPU", "5000", "100"), 2: ("VDD_SOC", "5000", "300")})
    _, rails, _ = find_rails(tmp_path)
    src = Ina3221Source(rails, model="AGX Orin")
    assert src.total_rail is None
    assert src.notes == ("this board (AGX Orin) has no module input-power rail (such as VDD_IN): "
                         "the total is the sum of the monitored rails, a lower bound that leaves "
                         "out the carrier board and unmonitored supplies",)
    assert Ina3221Source(rails).notes[0].startswith("this board has no module input-power rail")
    Path(rails[0].files[1]).unlink()
    for _ in range(7):
        assert src.read_mw() == [None, 1500.0]
    errs = src.errors()
    assert len(errs) == 5 and errs[0].startswith("VDD_GPU: ")  # the first five kept


def test_iio_layout_reads_power_in_milliwatts(tmp_path):
    dev = tmp_path / IIO / "6-0040" / "iio:device0"
    dev.mkdir(parents=True)
    for k, (name, mw) in enumerate((("POM_5V_IN", "3200"), ("POM_5V_GPU", "800"),
                                    ("NC", "0"))):
        (dev / f"rail_name_{k}").write_text(name + "\n")
        (dev / f"in_power{k}_input").write_text(mw + "\n")
    layout, rails, problems = find_rails(tmp_path)
    assert layout == "ina3221x" and problems == []
    assert [r.name for r in rails] == ["POM_5V_IN", "POM_5V_GPU"]
    assert [r.device for r in rails] == ["6-0040", "6-0040"]
    src = Ina3221Source(rails, layout="ina3221x")
    assert src.name == "jetson-ina3221-ina3221x" and src.total_rail == "POM_5V_IN"
    assert src.read_mw() == [3200.0, 800.0]
    assert find_rails(tmp_path / "nothing") == ("", [], [])


class FakeJtop:
    """jtop's client: ``power`` as jetson-stats 4.x documents it, an interval, close()."""

    interval = 0.5

    def __init__(self, power):
        self.power = power
        self.closed = 0

    def close(self):
        self.closed += 1


def test_jtop_rails_total_and_missing_readings():
    from xception_trt.power.jetson import JtopSource

    client = FakeJtop({"rail": {"VDD_GPU": {"power": 1200}, "VDD_CPU": {"power": 800.5}},
                       "tot": {"power": 4000}})
    src = JtopSource(client)
    assert src.rails == ("VDD_CPU", "VDD_GPU", "total") and src.total_rail == "total"
    assert src.notes == ("jetson-stats refreshes every 0.5 s; short windows see few distinct "
                         "readings",)
    assert src.read_mw() == [800.5, 1200.0, 4000.0]
    client.power = {"rail": {"VDD_GPU": {"power": "n/a"}}, "tot": {}}
    assert src.read_mw() == [None, None, None]
    assert src.errors()[:2] == ["VDD_CPU: jtop gave no power reading",
                                "VDD_GPU: jtop gave no power reading"]
    src.close()
    src.close()
    assert client.closed == 1
    no_total = JtopSource(FakeJtop({"rail": {"A": {"power": 1}}}))
    assert no_total.rails == ("A",) and no_total.total_rail is None


# ---------------------------------------------------------------------------------------------
# sampler: the monitor, its windows, what they report


def test_monitor_checks_its_period_and_describes_its_source():
    from xception_trt.errors import ConfigError

    for bad in (0.0009, 10.01, "1", None):
        with pytest.raises(ConfigError, match="power sampling period must be 0.001..10 s"):
            PowerMonitor(Rails(("A",), [1.0]), period_s=bad)
    for ok in (0.001, 10):
        assert PowerMonitor(Rails(("A",), [1.0]), period_s=ok).period_s == float(ok)
    with pytest.raises(ConfigError, match="needs the reason"):
        PowerMonitor(None)
    src = Rails(("VDD_IN", "VDD_GPU"), [1.0, 2.0], total="VDD_IN")
    mon = PowerMonitor(src, period_s=0.5)
    assert mon.available and mon.describe() == {
        "available": True, "reason": None, "backend": "double", "rails": ["VDD_IN", "VDD_GPU"],
        "total_rail": "VDD_IN", "scope": "module", "period_s": 0.5, "notes": []}
    off = PowerMonitor(None, reason="no rails here")
    assert not off.available
    assert off.describe() == {"available": False, "reason": "no rails here", "backend": None}
    r = off.start().stop()
    assert r.available is False and r.reason == "no rails here" and r.samples == 0


def test_window_reading_fields_and_notes():
    r = _window(Rails(("VDD_IN", "VDD_GPU"), [5000.0, 2000.0], total="VDD_IN"))
    assert r.available and r.backend == "double" and r.samples == 2
    assert r.rails_w == {"VDD_IN": 5.0, "VDD_GPU": 2.0} and r.total_w == 5.0
    assert r.total_basis == "VDD_IN (module input rail)"
    assert r.energy_basis == "mean total power x window"
    assert r.energy_j == pytest.approx(5.0 * r.duration_s)
    assert r.sampler_busy_ms >= 0
    (note,) = r.notes  # a window far shorter than 10 periods of 10 s
    assert note.startswith("the window (") and "spans fewer than 10 sampling periods of " \
        "10000 ms; more iterations give a steadier figure" in note
    d = r.to_dict(images=10)
    assert list(d)[-2:] == ["sampler_busy_ms", "notes"] and d["images"] == 10
    assert d["energy_per_image_mj"] == pytest.approx(1000 * r.energy_j / 10, rel=1e-5)


def test_gpu_scope_basis_and_failed_source_notes():
    class Gpu(Rails):
        scope = "gpu"

        def errors(self):
            return ["e1", "e2", "e3", "e4"]

    r = _window(Gpu(("GPU 0",), [250_000.0], total="GPU 0"))
    assert r.total_basis == "GPU 0 (the GPU board; host CPU and memory not included)"
    assert r.total_w == 250.0
    assert r.notes[-1] == "read failures: e1; e2; e3"
    dead = _window(Rails(("A", "B"), [None, None]))
    assert dead.available is False and dead.reason == "no rail could be read during the window"
    assert dead.failed_reads == 4 and dead.total_w is None and dead.energy_j is None
    implausible = _window(Rails(("A",), [float("nan")]))
    assert implausible.rails_w == {"A": None} and implausible.failed_reads == 2


def test_sum_of_rails_uses_only_samples_where_every_rail_was_read():
    class Flaky(Rails):
        def __init__(self):
            super().__init__(("A", "B"), [])
            self.calls = 0

        def read_mw(self):
            self.calls += 1
            return [1000.0, None] if self.calls == 1 else [3000.0, 1000.0]

    r = _window(Flaky())
    assert r.rails_w == {"A": pytest.approx(2.0), "B": 1.0}
    assert r.total_w == pytest.approx(4.0)  # only the second sample had both rails
    assert r.failed_reads == 1


def test_a_window_samples_on_its_period():
    class Counting(Rails):
        def __init__(self):
            super().__init__(("A",), [1000.0])
            self.reads = threading.Event()
            self.n = 0

        def read_mw(self):
            self.n += 1
            if self.n >= 4:
                self.reads.set()
            return super().read_mw()

    src = Counting()
    w = PowerMonitor(src, period_s=0.001).start()
    assert src.reads.wait(10)  # the thread read on its own (the opening read is only one)
    r = w.stop()
    assert r.samples >= 4 and w.stop() is r  # stop is idempotent


# ---------------------------------------------------------------------------------------------
# NVML: the source's variants and the report context, against a double with pynvml's names


class Nvml:
    """An NVML double: ``gpus`` GPUs; ``unsupported`` names the calls that raise
    NVMLError_NotSupported; ``broken`` those that raise a plain NVMLError. Every value differs
    per GPU and per clock kind, so a swapped field shows."""

    NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's name
        pass

    def __init__(self, gpus=2, unsupported=(), broken=(), init_fails=False):
        self.gpus, self.unsupported, self.broken = gpus, set(unsupported), set(broken)
        self.init_fails, self.shutdowns, self.energy = init_fails, 0, 5000

    def _check(self, name):
        if name in self.unsupported:
            raise self.NVMLError_NotSupported("Not Supported")
        if name in self.broken:
            raise self.NVMLError("Unknown Error")

    def nvmlInit(self):  # noqa: N802
        if self.init_fails:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self):  # noqa: N802
        self.shutdowns += 1
        self._check("nvmlShutdown")

    def nvmlSystemGetDriverVersion(self):  # noqa: N802
        return b"580.65"

    def nvmlDeviceGetCount(self):  # noqa: N802
        self._check("nvmlDeviceGetCount")
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, index):  # noqa: N802
        return ("h", index)

    def nvmlDeviceGetHandleByPciBusId(self, bus):  # noqa: N802
        if bus != "00000000:65:00.0":
            raise self.NVMLError("Not Found")
        return ("h", 1)

    def nvmlDeviceGetName(self, h):  # noqa: N802
        self._check("nvmlDeviceGetName")
        return f"GPU{h[1]}"

    def nvmlDeviceGetTotalEnergyConsumption(self, h):  # noqa: N802
        self._check("nvmlDeviceGetTotalEnergyConsumption")
        self.energy += 250
        return self.energy

    def nvmlDeviceGetPowerUsage(self, h):  # noqa: N802
        self._check("nvmlDeviceGetPowerUsage")
        return 70_000 + h[1]

    def nvmlDeviceGetEnforcedPowerLimit(self, h):  # noqa: N802
        self._check("nvmlDeviceGetEnforcedPowerLimit")
        return 300_500 + 1000 * h[1]

    def nvmlDeviceGetPersistenceMode(self, h):  # noqa: N802
        self._check("nvmlDeviceGetPersistenceMode")
        return h[1]  # GPU0 off, GPU1 on

    def nvmlDeviceGetClockInfo(self, h, kind):  # noqa: N802
        self._check("nvmlDeviceGetClockInfo")
        return (1000, 1100, 9000)[kind] + h[1]

    def nvmlDeviceGetMaxClockInfo(self, h, kind):  # noqa: N802
        self._check("nvmlDeviceGetMaxClockInfo")
        return (2000, 2100, 9500)[kind] + h[1]

    def nvmlDeviceGetPerformanceState(self, h):  # noqa: N802
        self._check("nvmlDeviceGetPerformanceState")
        return 2 + h[1]


def test_nvml_source_by_pci_bus_id_and_its_notes():
    nv = Nvml()
    src = NvmlSource(nvml=nv, pci_bus_id="00000000:65:00.0")
    assert src.gpu == "GPU1" and src.rails == ("GPU at PCI 00000000:65:00.0",)
    assert src.total_rail == src.rails[0] and src.scope == "gpu" and src.name == "nvml"
    assert src.notes == ("NVML GPU at PCI 00000000:65:00.0 (GPU1): the GPU board only; host CPU "
                         "and memory are not included",)
    assert src.read_mw() == [70_001.0] and src.energy_mj() == 5500.0  # 5000 + 2 x 250
    src.close()
    src.close()
    assert nv.shutdowns == 1
    with pytest.raises(NvmlUnavailable, match=r"NVML has no GPU at PCI bus id 0000:01:00.0 "
                                              r"\(NVMLError: Not Found\)"):
        NvmlSource(nvml=Nvml(), pci_bus_id="0000:01:00.0")


def test_nvml_source_with_only_energy_or_only_power():
    only_energy = NvmlSource(nvml=Nvml(unsupported={"nvmlDeviceGetPowerUsage"}))
    assert only_energy.rails == () and only_energy.total_rail is None
    assert only_energy.read_mw() == []
    assert only_energy.notes[1] == ("no power reading (not supported by this GPU "
                                    "(NVML_ERROR_NOT_SUPPORTED)): the mean comes from the energy "
                                    "counter")
    only_power = NvmlSource(nvml=Nvml(unsupported={"nvmlDeviceGetTotalEnergyConsumption"}))
    assert only_power.energy_mj() is None and only_power.read_mw() == [70_000.0]
    assert only_power.notes[1] == ("no energy counter (not supported by this GPU "
                                   "(NVML_ERROR_NOT_SUPPORTED)): energy = mean of power samples "
                                   "x time; on Ampere and newer NVML's power reading is a 1 s "
                                   "average")
    nv = Nvml(unsupported={"nvmlDeviceGetTotalEnergyConsumption"},
              broken={"nvmlDeviceGetPowerUsage"})
    with pytest.raises(NvmlUnavailable, match=r"NVML reports neither energy \(not supported by "
                                              r"this GPU .*\) nor power \(NVMLError: Unknown "
                                              r"Error\) for GPU0"):
        NvmlSource(nvml=nv)
    assert nv.shutdowns == 1  # started, then shut down again


def test_nvml_read_failures_are_recorded():
    nv = Nvml()
    src = NvmlSource(nvml=nv)
    nv.broken = {"nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEnergyConsumption"}
    for _ in range(7):
        assert src.read_mw() == [None]
    assert src.errors() == ["NVMLError: Unknown Error"] * 5
    assert src.energy_mj() is None


def test_nvml_without_a_driver_or_gpus():
    with pytest.raises(NvmlUnavailable, match=r"NVML did not start: Driver Not Loaded"):
        NvmlSource(nvml=Nvml(init_fails=True))
    with pytest.raises(NvmlUnavailable, match=r"NVML sees 0 GPU\(s\), no GPU 0"):
        NvmlSource(nvml=Nvml(gpus=0))
    with pytest.raises(NvmlUnavailable, match=r"NVML sees 0 GPU\(s\), no GPU 0 \(NVMLError: "
                                              r"Unknown Error\)"):
        NvmlSource(nvml=Nvml(broken={"nvmlDeviceGetCount"}))


def test_nvml_context_reports_every_gpu_in_units():
    from xception_trt.power.nvml import nvml_context

    nv = Nvml(unsupported={"nvmlDeviceGetPerformanceState"})
    ctx = nvml_context(nvml=nv)
    assert ctx["available"] is True and ctx["reason"] is None and ctx["driver"] == "580.65"
    g0, g1 = ctx["gpus"]
    assert g0 == {"index": 0, "name": "GPU0",
                  "clocks_mhz": {"graphics": 1000, "sm": 1100, "memory": 9000},
                  "max_clocks_mhz": {"graphics": 2000, "sm": 2100, "memory": 9500},
                  "power_limit_w": 300.5, "persistence_mode": "off", "performance_state": None,
                  "unsupported": {"performance_state": "not supported by this GPU "
                                                       "(NVML_ERROR_NOT_SUPPORTED)"}}
    assert g1["persistence_mode"] == "on" and g1["power_limit_w"] == 301.5
    assert g1["clocks_mhz"] == {"graphics": 1001, "sm": 1101, "memory": 9001}
    assert nv.shutdowns == 1
    ok = nvml_context(nvml=Nvml(gpus=1))
    assert ok["gpus"][0]["performance_state"] == "P2" and ok["gpus"][0]["unsupported"] == {}
    none = nvml_context(nvml=Nvml(unsupported={"nvmlDeviceGetEnforcedPowerLimit",
                                               "nvmlDeviceGetPersistenceMode"}, gpus=1))
    assert none["gpus"][0]["power_limit_w"] is None
    assert none["gpus"][0]["persistence_mode"] is None
    assert set(none["gpus"][0]["unsupported"]) == {"power_limit", "persistence_mode"}
    assert nvml_context(nvml=Nvml(init_fails=True)) == {
        "available": False, "reason": "NVML did not start: Driver Not Loaded", "driver": None,
        "gpus": []}
    quiet = Nvml(broken={"nvmlShutdown"}, gpus=0)
    assert nvml_context(nvml=quiet)["gpus"] == []  # a failing shutdown is only logged


def test_load_nvml_names_the_extra(monkeypatch):
    import importlib

    from xception_trt.power import nvml as nvml_mod

    def missing(name):
        raise ImportError(name)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(NvmlUnavailable, match=r"nvidia-ml-py is not installed; "):
        nvml_mod.load_nvml()
    assert "power" in nvml_mod.INSTALL


def test_enabled_channels_kept_and_odd_label_bytes_replaced(tmp_path):
    _monitor(tmp_path, "1-0040", {1: ("VDD_IN", "5000", "1000"), 2: ("VDD_\xff", "5000", "200")})
    hw = tmp_path / HWMON / "1-0040" / "hwmon" / "hwmon0"
    (hw / "in1_enable").write_text("1\n")
    (hw / "in2_label").write_bytes(b"VDD_\xffX\n")
    _, rails, _ = find_rails(tmp_path)
    assert [r.name for r in rails] == ["VDD_IN", "VDD_\ufffdX"]


def test_jtop_close_failure_is_logged_and_a_reading_without_rails(caplog):
    from xception_trt.power.jetson import JtopSource

    class Failing(FakeJtop):
        def close(self):
            raise RuntimeError("service gone")

    src = JtopSource(Failing({"rail": {"A": {"power": 5}}, "tot": {"power": 9}}))
    src._client.power = {"tot": {"power": 9}}  # a refresh without the rail table
    assert src.read_mw() == [None, 9.0]
    with caplog.at_level("DEBUG", logger="xception_trt.power.jetson"):
        src.close()
    assert "jtop close failed: service gone" in caplog.text


def test_small_rules_of_the_sampler_and_nvml(monkeypatch):
    from types import SimpleNamespace

    from xception_trt.errors import ConfigError
    from xception_trt.power import nvml as nvml_mod
    from xception_trt.power import sampler as sampler_mod
    from xception_trt.power.nvml import nvml_context

    with pytest.raises(ConfigError) as err:
        PowerMonitor(None)
    assert str(err.value) == "a power monitor without a source needs the reason"
    # the sampler's own time adds up over its reads (a clock that ticks 1 ms per look)
    ticks = iter(range(10_000))
    monkeypatch.setattr(sampler_mod, "time", SimpleNamespace(
        monotonic=lambda: next(ticks) / 1000.0))
    r = PowerMonitor(Rails(("A",), [1000.0]), period_s=10.0).start().stop()
    assert r.samples == 2 and r.sampler_busy_ms == pytest.approx(2.0)
    monkeypatch.undo()
    asked = []
    monkeypatch.setattr(nvml_mod.importlib, "import_module", lambda n: asked.append(n) or "mod")
    assert nvml_mod.load_nvml() == "mod" and asked == ["pynvml"]
    monkeypatch.undo()
    ctx = nvml_context(nvml=Nvml(gpus=1, unsupported={"nvmlDeviceGetName"}))
    assert ctx["gpus"][0]["name"] is None and "name" in ctx["gpus"][0]["unsupported"]
