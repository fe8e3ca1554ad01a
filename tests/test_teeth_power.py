"""Tests with teeth for power/ (issue 31): rails with the same label on two monitors are told
apart; sysfs units give known physical values (5000 mV x 1200 mA = 6000 mW); a failed read
counts once per rail; an energy counter that did not advance means 0 J from the counter, one that
went backwards (a reset) falls back to mean power x time; NVML's GPU index must be below the
count. Windows use a long sampling period, so each has exactly the opening and closing sample.
"""

from __future__ import annotations

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
