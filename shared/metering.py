"""Measure the compute of one phase of work: wall and CPU seconds, peak RSS, energy, GPU time.

A `Meter` belongs to one run (a CLI command or one Celery task); there is no global state.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

GIB = 1024**3
# RAPL counters wrap after roughly 2^32 to 2^38 uJ (minutes at full load on big sockets), so
# they are read at least this often during a phase, not only at its ends.
RAPL_POLL_SECONDS = 5.0
_PACKAGE_DOMAIN = re.compile(r"^intel-rapl:\d+$")
# Reported for a sum of phases whose sources differ: the least exact one.
_SOURCE_RANK = {"estimate": 0, "rapl": 1, "nvml": 2}


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


def _import_pynvml() -> ModuleType | None:
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
    opened = _open_nvml(_import_pynvml())
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
class EnergyModel:
    """Watts used to estimate energy where no hardware counter is readable (most VMs)."""

    # Cloud Carbon Footprint methodology, Appendix I (AWS; SPECpower-derived averages): 0.74 W
    # per vCPU idle, 3.5 W at 100% CPU. cpu_seconds counts busy core-seconds, so the full-load
    # figure applies. Server-side only: no PUE (CCF uses 1.135 for AWS).
    watts_per_core: float = 3.5
    # CCF memory coefficient: 0.000392 kWh per GB-hour, i.e. 0.392 W per GB held (GB read as GiB).
    watts_per_gb: float = 0.392

    def estimate(self, *, cpu_seconds: float, peak_rss_bytes: int, wall_seconds: float) -> float:
        """Joules: busy CPU time at full-load watts plus the peak memory held for the wall time."""
        memory_watts = peak_rss_bytes / GIB * self.watts_per_gb
        return cpu_seconds * self.watts_per_core + memory_watts * wall_seconds


@dataclass(frozen=True)
class PhaseMeasurement:
    """What one phase cost.

    energy_source is "rapl", "estimate", or "nvml" when GPU counters were added to the host's
    (RAPL or estimated) energy; gpu_seconds is wall time times the GPUs this process used.
    """

    phase: str
    started_at: datetime
    finished_at: datetime
    wall_seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    energy_joules: float
    energy_source: str
    gpu_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable values; times as ISO-8601 strings."""
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat()
        return data


@dataclass(frozen=True)
class _RaplDomain:
    """One package's energy counter and the value at which it wraps."""

    energy_file: Path
    max_range_uj: int


class _RaplCounter:
    """Sums the package domains' energy, read often enough to see every wrap."""

    def __init__(self, domains: list[_RaplDomain], first: list[int]) -> None:
        self._domains = domains
        self._last = first
        self.microjoules = 0

    @classmethod
    def open(cls, root: Path) -> _RaplCounter | None:
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


class _GpuCounter:
    """NVML energy and use by this process over one phase (all GPUs when told they are used)."""

    def __init__(self, nvml: Any, handles: list[Any], *, use: bool | None) -> None:
        self._nvml = nvml
        self._handles = handles
        self._first = self._energy_mj()
        self._used: set[int] = set(range(len(handles))) if use else set()
        self._auto = use is None

    @classmethod
    def open(cls, nvml: Any, *, use: bool | None) -> _GpuCounter | None:
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


class _RssReader:
    """This process's resident set: pread on an open /proc/self/statm where there is one.

    Measured on a 2-core VM from a waking thread: ~50 us a read, against ~270 us for psutil.
    Opened per phase, so a Meter created before a fork reads the child.
    """

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        try:
            self._fd: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._fd = None
            self._process = psutil.Process()

    def __call__(self) -> int:
        """Bytes resident now."""
        if self._fd is None:
            return int(self._process.memory_info().rss)
        return int(os.pread(self._fd, 128, 0).split()[1]) * self._page

    def close(self) -> None:
        """Release the file descriptor."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Sampler:
    """Background thread: RSS every `interval` seconds, and the slower energy counters' polls."""

    def __init__(self, interval: float, pollers: list[Callable[[], bool]]) -> None:
        self._rss = _RssReader()
        self._interval = interval
        self._pollers = pollers
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meter-sampler", daemon=True)
        self.peak = 0
        self.sample()

    def sample(self) -> None:
        """Read the resident set and keep the peak."""
        self.peak = max(self.peak, self._rss())

    def start(self) -> None:
        """Start sampling unless sampling is switched off (interval 0)."""
        if self._interval > 0:
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and take one last sample."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self.sample()
        finally:
            self._rss.close()

    def _run(self) -> None:
        next_poll = time.monotonic() + RAPL_POLL_SECONDS
        while not self._stop.wait(self._interval):
            with suppress(OSError, psutil.Error):
                self.sample()
            if time.monotonic() >= next_poll:
                next_poll += RAPL_POLL_SECONDS
                for poll in self._pollers:
                    poll()


class PhaseProgress:
    """What `Meter.measure` yields: live figures so far, and the measurement once it ends."""

    def __init__(self, phase: str, sampler: _Sampler, start: _Start) -> None:
        self.phase = phase
        self.measurement: PhaseMeasurement | None = None
        self._sampler = sampler
        self._start = start

    @property
    def peak_rss_bytes(self) -> int:
        """Highest resident set sampled so far in this phase."""
        return self._sampler.peak

    @property
    def cpu_seconds_so_far(self) -> float:
        """Process CPU used since the phase started (for budgets checked mid-phase)."""
        return _cpu_seconds() - self._start.cpu

    @property
    def wall_seconds_so_far(self) -> float:
        """Wall-clock seconds since the phase started."""
        return time.perf_counter() - self._start.wall


def _cpu_seconds() -> float:
    """User + system CPU of this whole process (all threads); children are not included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _max_rss_bytes() -> int:
    """Lifetime peak resident set of this process (KiB on Linux, bytes on macOS)."""
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(max_rss) if sys.platform == "darwin" else int(max_rss) * 1024


@dataclass(frozen=True)
class _Start:
    """Readings taken when a phase starts."""

    at: datetime
    wall: float
    cpu: float
    max_rss: int


class Meter:
    """Measures phases one after another; `measurements` keeps them in order.

    CPU is the whole process (other threads' work included), children excluded; RAPL and NVML
    energy is whole-package and whole-device, so other processes on the host count too.
    """

    def __init__(
        self,
        *,
        energy: EnergyModel,
        rapl_root: Path = Path("/sys/class/powercap"),
        sample_interval: float = 0.05,
    ) -> None:
        if sample_interval < 0:
            raise ValueError("sample_interval must be >= 0 (0 turns the sampler off)")
        self.energy = energy
        self.rapl_root = rapl_root
        self.sample_interval = sample_interval
        self.measurements: list[PhaseMeasurement] = []
        self._pynvml = _import_pynvml()  # once: a failed import costs ~0.3 ms a phase

    @contextmanager
    def measure(self, phase: str, *, gpu: bool | None = None) -> Iterator[PhaseProgress]:
        """Measure the body as `phase`; recorded even if the body raises, since the cost was paid.

        `gpu`: None finds this process on the GPUs via NVML, True counts every GPU, False none.
        """
        rapl = _RaplCounter.open(self.rapl_root)
        gpus = _GpuCounter.open(self._pynvml, use=gpu)
        pollers = [counter.poll for counter in (rapl, gpus) if counter is not None]
        sampler = _Sampler(self.sample_interval, pollers)
        start = _Start(datetime.now(UTC), time.perf_counter(), _cpu_seconds(), _max_rss_bytes())
        progress = PhaseProgress(phase, sampler, start)
        sampler.start()
        try:
            yield progress
        finally:
            sampler.stop()
            try:
                measurement = self._finish(phase, start, sampler.peak, rapl, gpus)
            finally:
                if gpus is not None:
                    gpus.close()
            progress.measurement = measurement
            self.measurements.append(measurement)

    def _finish(
        self,
        phase: str,
        start: _Start,
        sampled_peak: int,
        rapl: _RaplCounter | None,
        gpus: _GpuCounter | None,
    ) -> PhaseMeasurement:
        """Turn the start readings and the counters into a measurement."""
        wall = time.perf_counter() - start.wall
        cpu = _cpu_seconds() - start.cpu
        max_rss = _max_rss_bytes()
        # A lifetime peak that rose during the phase was reached in it: exact, unlike samples.
        peak = max(sampled_peak, max_rss) if max_rss > start.max_rss else sampled_peak
        if rapl is not None and rapl.poll():
            joules, source = rapl.microjoules / 1e6, "rapl"
        else:
            estimate = self.energy.estimate(cpu_seconds=cpu, peak_rss_bytes=peak, wall_seconds=wall)
            joules, source = estimate, "estimate"
        used, gpu_joules = gpus.finish() if gpus is not None else (0, 0.0)
        if used:
            joules, source = joules + gpu_joules, "nvml"
        return PhaseMeasurement(
            phase=phase,
            started_at=start.at,
            finished_at=datetime.now(UTC),
            wall_seconds=wall,
            cpu_seconds=cpu,
            peak_rss_bytes=peak,
            energy_joules=joules,
            energy_source=source,
            gpu_seconds=wall * used,
        )

    def total(self) -> PhaseMeasurement:
        """All phases as one: sums, except the peak (the largest) and the source (the weakest)."""
        if not self.measurements:
            raise ValueError("no phase has been measured")
        ms = self.measurements
        return PhaseMeasurement(
            phase="total",
            started_at=min(m.started_at for m in ms),
            finished_at=max(m.finished_at for m in ms),
            wall_seconds=sum(m.wall_seconds for m in ms),
            cpu_seconds=sum(m.cpu_seconds for m in ms),
            peak_rss_bytes=max(m.peak_rss_bytes for m in ms),
            energy_joules=sum(m.energy_joules for m in ms),
            energy_source=min((m.energy_source for m in ms), key=_SOURCE_RANK.__getitem__),
            gpu_seconds=sum(m.gpu_seconds for m in ms),
        )
