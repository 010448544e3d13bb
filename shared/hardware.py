"""What the host is and what its energy counters read: CPU model, GPUs (NVML), Intel RAPL.

Every reader degrades to None where the counter is absent or unreadable (most VMs), and the
meter then estimates energy from CPU time (shared.metering.EnergyModel).
"""

from __future__ import annotations

import os
import platform
import re
import socket
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

_PACKAGE_DOMAIN = re.compile(r"^intel-rapl:\d+$")


@dataclass(frozen=True)
class HostInfo:
    """Where a measurement was taken, so costs from different machines are not compared blindly."""

    hostname: str
    cpu_model: str
    cpu_count: int
    gpu_name: str | None

    @classmethod
    def detect(cls) -> HostInfo:
        """Read this host's name, CPU model and count, and the first GPU's name if NVML sees one."""
        return cls(
            hostname=socket.gethostname(),
            cpu_model=_cpu_model(),
            cpu_count=os.cpu_count() or 1,
            gpu_name=_gpu_name(),
        )


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The "model name" line of /proc/cpuinfo, else what `platform` knows."""
    with suppress(OSError):
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def import_pynvml() -> ModuleType | None:
    """pynvml if installed (an optional extra, never a dependency), else None."""
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return pynvml  # type: ignore[no-any-return,unused-ignore]


def _open_nvml(nvml: Any) -> tuple[Any, list[Any]] | None:
    """Initialised pynvml and a handle per GPU, or None without pynvml, a driver or a GPU."""
    if nvml is None:
        return None
    try:
        nvml.nvmlInit()
    except Exception:  # NVMLError and its subclasses: no driver, no library
        return None
    try:
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    except Exception:
        handles = []
    if not handles:
        nvml.nvmlShutdown()
        return None
    return nvml, handles


def _gpu_name() -> str | None:
    """Name of GPU 0 via NVML, or None."""
    opened = _open_nvml(import_pynvml())
    if opened is None:
        return None
    nvml, handles = opened
    try:
        name = nvml.nvmlDeviceGetName(handles[0])
    except Exception:
        return None
    finally:
        nvml.nvmlShutdown()
    return name.decode() if isinstance(name, bytes) else str(name)


@dataclass(frozen=True)
class _RaplDomain:
    """One package's energy counter and the value at which it wraps."""

    energy_file: Path
    max_range_uj: int


class RaplCounter:
    """Sums the package domains' energy, read often enough to see every wrap."""

    def __init__(self, domains: list[_RaplDomain], first: list[int]) -> None:
        self._domains = domains
        self._last = first
        self.microjoules = 0

    @classmethod
    def open(cls, root: Path) -> RaplCounter | None:
        """A counter over every package domain under `root`, or None if any is unreadable."""
        try:
            domains = [_rapl_domain(d) for d in sorted(root.glob("intel-rapl:*")) if _is_package(d)]
            first = [_read_int(d.energy_file) for d in domains]
        except (OSError, ValueError):
            return None
        return cls(domains, first) if domains else None

    def poll(self) -> bool:
        """Add the energy since the last read; False (and nothing added) if a read fails."""
        try:
            now = [_read_int(d.energy_file) for d in self._domains]
        except (OSError, ValueError):
            return False
        for domain, before, after in zip(self._domains, self._last, now, strict=True):
            delta = after - before
            self.microjoules += delta if delta >= 0 else delta + domain.max_range_uj
        self._last = now
        return True


def _is_package(directory: Path) -> bool:
    """Top-level package zones only: subzones (core, dram) are inside them, psys spans them."""
    if not _PACKAGE_DOMAIN.match(directory.name):
        return False
    with suppress(OSError):
        return (directory / "name").read_text().strip().startswith("package")
    return False


def _rapl_domain(directory: Path) -> _RaplDomain:
    """The counter file and wrap value of one domain."""
    return _RaplDomain(directory / "energy_uj", _read_int(directory / "max_energy_range_uj"))


def _read_int(path: Path) -> int:
    """An integer sysfs value."""
    return int(path.read_text().strip())


class GpuCounter:
    """NVML energy and use by this process over one phase (all GPUs when told they are used)."""

    def __init__(self, nvml: Any, handles: list[Any], *, use: bool | None) -> None:
        self._nvml = nvml
        self._handles = handles
        self._first = self._energy_mj()
        self._used: set[int] = set(range(len(handles))) if use else set()
        self._auto = use is None

    @classmethod
    def open(cls, nvml: Any, *, use: bool | None) -> GpuCounter | None:
        """A counter if pynvml, a driver and at least one GPU are present (and `use` allows)."""
        opened = None if use is False else _open_nvml(nvml)
        return None if opened is None else cls(*opened, use=use)

    def _energy_mj(self) -> dict[int, int]:
        """Total energy (mJ) per GPU that reports it (Volta and later)."""
        readings: dict[int, int] = {}
        for index, handle in enumerate(self._handles):
            with suppress(Exception):
                readings[index] = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        return readings

    def poll(self) -> bool:
        """Note which GPUs run this process. NVML lists host PIDs: in a container pass gpu=True."""
        if not self._auto:
            return True
        pid = os.getpid()
        for index, handle in enumerate(self._handles):
            with suppress(Exception):
                procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(handle)
                if any(proc.pid == pid for proc in procs):
                    self._used.add(index)
        return True

    def finish(self) -> tuple[int, float]:
        """(GPUs used, joules they drew in the phase): whole-device energy, not this process's."""
        self.poll()
        last = self._energy_mj()
        joules = sum(last[i] - self._first[i] for i in self._used if i in last and i in self._first)
        return len(self._used), joules / 1000.0

    def close(self) -> None:
        """Release NVML."""
        with suppress(Exception):
            self._nvml.nvmlShutdown()
