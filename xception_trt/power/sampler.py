"""A background thread that samples a power source around a timed loop, and what it measured.

The thread wakes at a fixed period on ``time.monotonic`` (default 50 ms: 20 reads a second, each
a few sysfs files or one NVML call), appends one small tuple per wake-up and does nothing else;
the means and the energy are computed after :meth:`PowerWindow.stop`. One sample is taken
synchronously when the window opens and one when it closes (outside the timed calls), so every
window has at least two. The time the thread spends reading is recorded (``sampler_busy_ms``):
the sampler's own share of the window.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..jsonable import encode_fields as _encode_fields
from ..jsonable import json_field

__all__ = ["PowerSource", "PowerReading", "PowerWindow", "PowerMonitor", "DEFAULT_PERIOD_S",
           "mean_over_time"]

log = logging.getLogger(__name__)

#: Default sampling period (seconds).
DEFAULT_PERIOD_S = 0.05
#: Largest plausible reading of one rail (mW): 10 kW, several times any board or GPU we read.
#: Beyond it (and NaN, infinities, negatives) a reading is a driver or sysfs fault.
MAX_PLAUSIBLE_MW = 1e7


def plausible_mw(value: Any) -> float | None:
    """``value`` as float milliwatts if it is a finite reading in ``0..MAX_PLAUSIBLE_MW``, else
    ``None`` (counted as a failed read): a NaN or -Infinity reached report.json, which is then
    not valid JSON (RFC 8259 has no NaN)."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return v if math.isfinite(v) and 0.0 <= v <= MAX_PLAUSIBLE_MW else None


class PowerSource(Protocol):
    """Something that reads power: the Jetson INA3221 rails, NVML, jetson-stats.

    Attributes:
        name: Backend name (``jetson-ina3221-hwmon``, ``nvml`` ...).
        rails: Names of the channels :meth:`read_mw` returns, in order.
        total_rail: The rail that is the input power of the whole module/board, if one is.
        scope: ``module`` (Jetson: CPU, GPU, memory on one supply) or ``gpu`` (NVML: the GPU
            board only; host CPU and memory not included).
        notes: Caveats shown in reports (no total rail, NVML's averaging window ...).
    """

    name: str
    rails: tuple[str, ...]
    total_rail: str | None
    scope: str
    notes: tuple[str, ...]

    def read_mw(self) -> Sequence[float | None]:
        """One reading per rail in milliwatts (``None`` where that read failed)."""

    def energy_mj(self) -> float | None:
        """A cumulative energy counter in millijoules, where the hardware has one."""

    def errors(self) -> list[str]:
        """Read failures seen so far (first few, as text)."""

    def close(self) -> None:
        """Release the source (idempotent)."""


def mean_over_time(times: Sequence[float], values: Sequence[float]) -> float:
    """Time-weighted mean of a sampled signal (trapezoids; one sample: that sample)."""
    if len(values) == 1:
        return float(values[0])
    area = 0.0
    for i in range(1, len(values)):
        area += (times[i] - times[i - 1]) * (values[i] + values[i - 1]) / 2.0
    span = times[-1] - times[0]
    return area / span if span > 0 else sum(values) / len(values)


@dataclass(frozen=True)
class PowerReading:
    """Power over one window (one runner at one batch size).

    Attributes:
        available: Whether anything was measured.
        reason: Why not (when ``available`` is false), else ``None``.
        backend: The source's name.
        duration_s: Length of the window (monotonic clock).
        samples: Samples taken (each reads every rail).
        failed_reads: Rail reads that failed (a vanished or malformed file, an NVML error).
        rails_w: Mean power per rail in watts (``None``: no good read of that rail).
        total_w: Mean total power in watts (see ``total_basis``), ``None`` when unknown.
        total_basis: What the total is (a named input rail, the sum of rails, the GPU board).
        energy_j: Energy over the window in joules (counter difference or mean x duration).
        energy_basis: How ``energy_j`` was obtained.
        sampler_busy_ms: Time the sampler spent reading (its own load on the machine).
        notes: Caveats of this window (the source's own are in ``PowerMonitor.describe()``).
    """

    available: bool
    reason: str | None = None
    backend: str | None = None
    duration_s: float = json_field(default=0.0, round=6)
    samples: int = 0
    failed_reads: int = 0
    rails_w: dict[str, float | None] = json_field(default_factory=dict, round=4)
    total_w: float | None = json_field(default=None, round=4)
    total_basis: str | None = None
    energy_j: float | None = json_field(default=None, round=6)
    energy_basis: str | None = None
    sampler_busy_ms: float = json_field(default=0.0, round=3)
    notes: tuple[str, ...] = ()

    # Hand-written: it takes the image count, which is no field of the reading.
    def to_dict(self, *, images: int | None = None) -> dict[str, Any]:
        """JSON-ready form, with the energy per image (mJ) when ``images`` > 0 were processed."""
        per_image = None
        if self.energy_j is not None and images:
            per_image = round(1000.0 * self.energy_j / images, 6)
        out = _encode_fields(self)
        tail = {k: out.pop(k) for k in ("sampler_busy_ms", "notes")}
        return out | {"images": images, "energy_per_image_mj": per_image} | tail


class PowerWindow:
    """One open sampling window; :meth:`stop` ends it and returns the :class:`PowerReading`."""

    def __init__(self, source: PowerSource | None, period_s: float, reason: str | None) -> None:
        self._source = source
        self._reason = reason
        self._period = period_s
        self._times: list[float] = []
        self._values: list[Sequence[float | None]] = []
        self._busy = 0.0
        self._failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._energy0: float | None = None
        self._result: PowerReading | None = None
        if source is None:
            return
        self._energy0 = self._energy()
        self._t0 = time.monotonic()
        self._take()
        self._thread = threading.Thread(target=self._run, name="xception-trt-power",
                                        daemon=True)
        self._thread.start()

    def _energy(self) -> float | None:
        if self._source is None:
            return None
        try:
            value = self._source.energy_mj()
            if value is None:
                return None
            energy = float(value)  # a counter: finite and not negative, or not used
            return energy if math.isfinite(energy) and energy >= 0 else None
        except Exception as exc:  # noqa: BLE001 - a failed counter read: fall back to samples
            log.debug("energy counter read failed: %s", exc)
            return None

    def _take(self) -> None:
        src = self._source
        t = time.monotonic()
        try:
            values = src.read_mw()  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - a broken source must not stop the benchmark
            self._failures += 1
            log.debug("power read failed: %s", exc)
            values = None
        done = time.monotonic()
        self._busy += done - t
        if values is not None:
            self._times.append(t)
            self._values.append([None if v is None else plausible_mw(v) for v in values])

    def _run(self) -> None:
        period = self._period
        deadline = self._t0 + period
        while not self._stop.wait(max(0.0, deadline - time.monotonic())):
            self._take()
            deadline += period
            now = time.monotonic()
            if deadline < now:  # fell behind (the machine is busy): skip, do not burst
                deadline = now + period

    def stop(self) -> PowerReading:
        """End the window (idempotent) and summarise it."""
        if self._result is not None:
            return self._result
        if self._source is None:
            self._result = PowerReading(False, reason=self._reason)
            return self._result
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._take()
        energy1 = self._energy()
        duration = time.monotonic() - self._t0
        self._result = self._summarise(duration, energy1)
        return self._result

    def _summarise(self, duration: float, energy1: float | None) -> PowerReading:
        src = self._source
        if src is None:  # not reached: stop() handles a window without a source
            return PowerReading(False, reason=self._reason)
        rails = src.rails
        failed = self._failures * len(rails)
        means: dict[str, float | None] = {}
        series: dict[str, tuple[list[float], list[float]]] = {}
        for i, name in enumerate(rails):
            ts, vs = [], []
            for t, row in zip(self._times, self._values):
                v = row[i] if i < len(row) else None
                if v is None:
                    failed += 1
                else:
                    ts.append(t)
                    vs.append(v / 1000.0)
            series[name] = (ts, vs)
            means[name] = mean_over_time(ts, vs) if vs else None
        notes: list[str] = []  # this window's caveats; the source's are in describe()
        total, basis = None, None
        if src.total_rail is not None:
            total = means.get(src.total_rail)
            basis = (f"{src.total_rail} (the GPU board; host CPU and memory not included)"
                     if src.scope == "gpu" else f"{src.total_rail} (module input rail)")
        elif rails:
            # No input rail (AGX Xavier, AGX Orin): the sum of the rails at the samples where
            # every rail was read; a lower bound of the module's power.
            ts, vs = [], []
            for t, row in zip(self._times, self._values):
                if len(row) == len(rails) and all(v is not None for v in row):
                    ts.append(t)
                    vs.append(sum(row) / 1000.0)  # type: ignore[arg-type]
            total = mean_over_time(ts, vs) if vs else None
            basis = ("sum of the rails " + " + ".join(rails)
                     + " (this board has no input-power rail: a lower bound)")
        energy, ebasis = None, None
        if self._energy0 is not None and energy1 is not None and energy1 >= self._energy0:
            energy = (energy1 - self._energy0) / 1000.0
            ebasis = "hardware energy counter"
            if total is None and duration > 0:
                total, basis = energy / duration, "energy counter / window"
        elif total is not None:
            energy = total * duration
            ebasis = "mean total power x window"
        if duration < 10 * self._period:
            notes.append(f"the window ({1000 * duration:.0f} ms) spans fewer than 10 sampling "
                         f"periods of {1000 * self._period:.0f} ms; more iterations give a "
                         "steadier figure")
        errors = src.errors()
        if errors:
            notes.append("read failures: " + "; ".join(errors[:3]))
        available = total is not None or any(v is not None for v in means.values())
        return PowerReading(
            available, reason=None if available else "no rail could be read during the window",
            backend=src.name, duration_s=duration, samples=len(self._times),
            failed_reads=failed, rails_w=means, total_w=total, total_basis=basis,
            energy_j=energy, energy_basis=ebasis, sampler_busy_ms=1000.0 * self._busy,
            notes=tuple(notes))


class PowerMonitor:
    """A power source (or the reason there is none) and the sampling period; opens windows.

    Use :func:`xception_trt.power.open_monitor` to pick the source this machine has.
    """

    def __init__(self, source: PowerSource | None, *, reason: str | None = None,
                 period_s: float = DEFAULT_PERIOD_S) -> None:
        from ..errors import ConfigError

        if not isinstance(period_s, (int, float)) or not 0.001 <= period_s <= 10:
            raise ConfigError(f"power sampling period must be 0.001..10 s, got {period_s!r}")
        if source is None and not reason:
            raise ConfigError("a power monitor without a source needs the reason")
        self.source = source
        self.reason = reason
        self.period_s = float(period_s)

    @property
    def available(self) -> bool:
        """Whether power can be sampled here."""
        return self.source is not None

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: backend, rails, total rail, scope, period, or the reason."""
        s = self.source
        if s is None:
            return {"available": False, "reason": self.reason, "backend": None}
        return {"available": True, "reason": None, "backend": s.name, "rails": list(s.rails),
                "total_rail": s.total_rail, "scope": s.scope, "period_s": self.period_s,
                "notes": list(s.notes)}

    def start(self) -> PowerWindow:
        """Open a window: one sample now, then one every period until :meth:`PowerWindow.stop`."""
        return PowerWindow(self.source, self.period_s, self.reason)

    def close(self) -> None:
        """Release the source (idempotent)."""
        if self.source is not None:
            self.source.close()

    def __enter__(self) -> PowerMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
