"""Measure the compute of one phase of work: wall and CPU seconds, peak RSS, energy, GPU time.

A `Meter` belongs to one run (a CLI command or one Celery task); there is no global state.
The hardware counters it reads live in shared.hardware.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from shared.hardware import GpuCounter, RaplCounter, import_pynvml

GIB = 1024**3


# RAPL counters wrap after roughly 2^32 to 2^38 uJ (minutes at full load on big sockets), so
# they are read at least this often during a phase, not only at its ends.
RAPL_POLL_SECONDS = 5.0


# Reported for a sum of phases whose sources differ: the least exact one.
_SOURCE_RANK = {"estimate": 0, "rapl": 1, "nvml": 2}


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
        self._pynvml = import_pynvml()  # once: a failed import costs ~0.3 ms a phase

    @contextmanager
    def measure(self, phase: str, *, gpu: bool | None = None) -> Iterator[PhaseProgress]:
        """Measure the body as `phase`; recorded even if the body raises, since the cost was paid.

        `gpu`: None finds this process on the GPUs via NVML, True counts every GPU, False none.
        """
        rapl = RaplCounter.open(self.rapl_root)
        gpus = GpuCounter.open(self._pynvml, use=gpu)
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
        rapl: RaplCounter | None,
        gpus: GpuCounter | None,
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
