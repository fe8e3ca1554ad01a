"""Jetson power rails: the on-module INA3221 monitors through sysfs, or jetson-stats.

Two sysfs layouts, both found under the ``root`` given (``/sys`` on a device; a recorded tree
in the tests):

- JetPack 5 and 6 (L4T r35/r36), the mainline ``ina3221`` hwmon driver:
  ``bus/i2c/drivers/ina3221/<bus>-<addr>/hwmon/hwmon<N>/in<k>_label`` (rail name),
  ``in<k>_input`` (bus voltage, mV) and ``curr<k>_input`` (current, mA), k = 1..3; power is
  their product. Channels labelled ``NC`` are not connected (AGX Orin's second monitor) and
  ``in7`` is the sum of shunt voltages, not a rail: both are skipped. Documented in the kernel's
  Documentation/hwmon/ina3221.rst and in the Jetson Linux Developer Guide, "Platform Power and
  Performance" for Orin Nano / Orin NX / AGX Orin and for Xavier NX / AGX Xavier.
- JetPack 4 (L4T r32), NVIDIA's ``ina3221x`` IIO driver:
  ``bus/i2c/drivers/ina3221x/<bus>-<addr>/iio:device<N>/rail_name_<k>`` with
  ``in_power<k>_input`` (mW), ``in_current<k>_input`` (mA), ``in_voltage<k>_input`` (mV),
  k = 0..2 (L4T 32.x Development Guide, "Power Management for Jetson Xavier NX Series and
  Jetson AGX Xavier Series" / "... Jetson Nano Devices").

The module's input rail, when the board has one, is ``VDD_IN`` (Orin NX, Orin Nano, Xavier NX)
or ``POM_5V_IN`` (Nano, TX2 under JetPack 4). AGX Xavier and AGX Orin monitor their rails but
not the module input: the total is then the sum of the rails, a lower bound, and says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Rail", "TOTAL_RAILS", "find_rails", "Ina3221Source", "JtopSource"]

log = logging.getLogger(__name__)

#: Rail names that carry the whole module's input power.
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
HWMON_DRIVER = Path("bus/i2c/drivers/ina3221")
IIO_DRIVER = Path("bus/i2c/drivers/ina3221x")
_MAX_ERRORS = 5


@dataclass(frozen=True)
class Rail:
    """One monitored rail: its name and the files that give its power.

    Attributes:
        name: The rail's label (``VDD_IN`` ...).
        files: ``(voltage mV, current mA)`` files (hwmon) or ``(power mW,)`` (ina3221x).
        device: The monitor it is on (``1-0040``), for messages.
    """

    name: str
    files: tuple[str, ...]
    device: str


def _read_text(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 64).decode("ascii", "replace").strip()
    finally:
        os.close(fd)


def _read_number(path: str) -> float:
    """A sysfs number (``"5040"``, or ``"5040 mA"`` as some Jetson kernels print)."""
    text = _read_text(path)
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        raise ValueError(f"{path} holds {text[:20]!r}, not a number") from None


def _check(rail: Rail) -> str | None:
    """Why ``rail`` cannot be read now, or ``None``."""
    for f in rail.files:
        try:
            _read_number(f)
        except (OSError, ValueError) as exc:
            return f"rail {rail.name} on {rail.device}: {exc}"
    return None


def _hwmon_rails(root: Path) -> list[Rail]:
    rails = []
    for dev in sorted((root / HWMON_DRIVER).glob("*-*")):
        for hw in sorted(dev.glob("hwmon/hwmon*")):
            for k in (1, 2, 3):  # in4..6 are shunt voltages, in7 their sum: not rails
                label = hw / f"in{k}_label"
                if not label.is_file():
                    continue
                try:
                    name = _read_text(str(label))
                except OSError:
                    continue
                enable = hw / f"in{k}_enable"
                try:
                    if enable.is_file() and _read_text(str(enable)) == "0":
                        continue
                except OSError:
                    pass
                if not name or name.upper() == "NC":  # not connected (AGX Orin)
                    continue
                rails.append(Rail(name, (str(hw / f"in{k}_input"), str(hw / f"curr{k}_input")),
                                  dev.name))
    return rails


def _iio_rails(root: Path) -> list[Rail]:
    rails = []
    for dev in sorted((root / IIO_DRIVER).glob("*-*")):
        for iio in sorted(dev.glob("iio:device*")):
            for label in sorted(iio.glob("rail_name_*")):
                k = label.name.rsplit("_", 1)[1]
                try:
                    name = _read_text(str(label))
                except OSError:
                    continue
                if not name or name.upper() == "NC":
                    continue
                rails.append(Rail(name, (str(iio / f"in_power{k}_input"),), dev.name))
    return rails


def find_rails(root: str | os.PathLike[str] = "/sys") -> tuple[str, list[Rail], list[str]]:
    """The INA3221 rails under ``root``, each checked by one read.

    Returns:
        ``(layout, rails, problems)``: ``layout`` is ``hwmon``, ``ina3221x`` or ``""`` (none
        found); ``problems`` names the rails left out and why (unreadable, not a number).
    """
    root = Path(root)
    for layout, finder in (("hwmon", _hwmon_rails), ("ina3221x", _iio_rails)):
        found = finder(root)
        if not found:
            continue
        good, problems = [], []
        seen: dict[str, int] = {}
        for rail in found:
            why = _check(rail)
            if why:
                problems.append(why)
                continue
            n = seen[rail.name] = seen.get(rail.name, 0) + 1
            if n > 1:  # the same label on two monitors: keep both, told apart by device
                rail = Rail(f"{rail.name}@{rail.device}", rail.files, rail.device)
            good.append(rail)
        return layout, good, problems
    return "", [], []


class _Rails:
    """What the Jetson sources share: no energy counter, the first read failures kept."""

    _errors: list[str]

    def _failed(self, text: str) -> None:
        if len(self._errors) < _MAX_ERRORS:
            self._errors.append(text)

    def energy_mj(self) -> float | None:
        """Neither the INA3221 nor jtop has an energy counter."""
        return None

    def errors(self) -> list[str]:
        """The first read failures."""
        return list(self._errors)


class Ina3221Source(_Rails):
    """Reads the Jetson INA3221 rails from sysfs (see the module docstring for the layouts)."""

    scope = "module"

    def __init__(self, rails: Sequence[Rail], *, layout: str = "hwmon",
                 model: str | None = None) -> None:
        self.name = f"jetson-ina3221-{layout}"
        self._rails = tuple(rails)
        self.rails = tuple(r.name for r in self._rails)
        self.total_rail = next((r for r in TOTAL_RAILS if r in self.rails), None)
        notes = []
        if self.total_rail is None:
            board = f" ({model})" if model else ""
            notes.append(f"this board{board} has no module input-power rail (such as VDD_IN): "
                         "the total is the sum of the monitored rails, a lower bound that "
                         "leaves out the carrier board and unmonitored supplies")
        else:
            notes.append(f"{self.total_rail} is the module's input: it includes CPU, GPU, "
                         "memory and the idle floor, not only the inference")
        self.notes = tuple(notes)
        self._errors: list[str] = []

    def read_mw(self) -> list[float | None]:
        """Power per rail in mW (``None`` where a file vanished or held garbage)."""
        out: list[float | None] = []
        for rail in self._rails:
            try:
                if len(rail.files) == 1:
                    out.append(_read_number(rail.files[0]))
                else:
                    out.append(_read_number(rail.files[0]) * _read_number(rail.files[1]) / 1000)
            except (OSError, ValueError) as exc:
                self._failed(f"{rail.name}: {exc}")
                out.append(None)
        return out

    def close(self) -> None:
        """Nothing to release (files are opened per read)."""


class JtopSource(_Rails):
    """Power rails through jetson-stats (``jtop``), where its service runs.

    ``jtop.power`` is ``{"rail": {name: {"power": mW, ...}}, "tot": {"power": mW, ...}}``
    (jetson-stats 4.x documentation). jtop refreshes at its own interval (default 1 s), so
    this backend is coarser than reading sysfs; it is used only where sysfs gave nothing.
    """

    name = "jetson-stats"
    scope = "module"

    def __init__(self, client: Any) -> None:
        self._client = client
        power = client.power
        self.rails: tuple[str, ...] = tuple(sorted(power.get("rail", {})))
        tot = power.get("tot") or {}
        self.total_rail: str | None = "total" if "power" in tot else None
        if self.total_rail:
            self.rails = self.rails + ("total",)
        every = getattr(client, "interval", "?")
        self.notes: tuple[str, ...] = (f"jetson-stats refreshes every {every} s; short "
                                       "windows see few distinct readings",)
        self._errors: list[str] = []

    def read_mw(self) -> list[float | None]:
        """Power per rail in mW from jtop's latest refresh."""
        power = self._client.power
        rails = power.get("rail", {})
        out: list[float | None] = []
        for name in self.rails:
            entry = power.get("tot", {}) if name == "total" else rails.get(name, {})
            value = entry.get("power")
            if isinstance(value, (int, float)):
                out.append(float(value))
            else:
                self._failed(f"{name}: jtop gave no power reading")
                out.append(None)
        return out

    def close(self) -> None:
        """Close the jtop client (idempotent)."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # noqa: BLE001 - closing must not fail a report
                log.debug("jtop close failed: %s", exc)
