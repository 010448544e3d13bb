"""Tests for phase metering: CPU against the OS's own accounting, peak RSS, energy sources."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import psutil
import pytest

from shared.hardware import HostInfo, RaplCounter
from shared.metering import EnergyModel, Meter, PhaseMeasurement

MB = 1024**2
MAX_RANGE = 2**32


def _meter(tmp_path: Path, **kwargs: Any) -> Meter:
    """A meter that finds no RAPL counters (as on most VMs) unless told otherwise."""
    kwargs.setdefault("rapl_root", tmp_path / "no-powercap")
    return Meter(energy=EnergyModel(), **kwargs)


def _proc_stat_cpu_seconds() -> float:
    """utime + stime of this process from /proc/self/stat, independent of the meter."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _burn_cpu(seconds: float) -> None:
    """Pure-Python work until this process has used `seconds` of CPU."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        sum(range(2000))


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_cpu_seconds_match_the_kernel_within_5_percent(tmp_path: Path) -> None:
    meter = _meter(tmp_path)
    before = _proc_stat_cpu_seconds()
    with meter.measure("burn") as progress:
        _burn_cpu(0.8)
    kernel = _proc_stat_cpu_seconds() - before
    assert progress.measurement is not None
    assert progress.measurement.cpu_seconds == pytest.approx(kernel, rel=0.05)


def test_sleeping_phase_has_wall_far_above_cpu(tmp_path: Path) -> None:
    with _meter(tmp_path).measure("sleep") as progress:
        time.sleep(0.3)
    m = progress.measurement
    assert m is not None
    assert m.wall_seconds >= 0.3
    assert m.cpu_seconds < m.wall_seconds / 2
    assert m.finished_at > m.started_at


def test_peak_rss_of_big_phase_then_smaller_phase(tmp_path: Path) -> None:
    meter = _meter(tmp_path)
    baseline = _rss()
    with meter.measure("big"):
        big = np.ones(200 * MB // 8)
    del big
    with meter.measure("small"):
        small = np.ones(1000)
    del small
    big_m, small_m = meter.measurements
    assert big_m.peak_rss_bytes >= baseline + 150 * MB
    assert small_m.peak_rss_bytes < big_m.peak_rss_bytes


def test_sampler_catches_a_transient_peak_below_the_lifetime_max(tmp_path: Path) -> None:
    # Raise the process's lifetime peak first, so ru_maxrss cannot explain the phase's peak.
    earlier = np.ones(300 * MB // 8)
    del earlier
    meter = _meter(tmp_path, sample_interval=0.01)
    baseline = _rss()
    with meter.measure("transient") as progress:
        transient = np.ones(200 * MB // 8)
        deadline = time.monotonic() + 10
        while progress.peak_rss_bytes < baseline + 150 * MB and time.monotonic() < deadline:
            time.sleep(0.01)
        del transient
    assert meter.measurements[0].peak_rss_bytes >= baseline + 150 * MB
    assert _rss() < baseline + 150 * MB


def test_no_sampler_thread_outlives_a_phase_and_zero_interval_starts_none(tmp_path: Path) -> None:
    def samplers() -> int:
        return sum(t.name == "meter-sampler" for t in threading.enumerate())

    with _meter(tmp_path, sample_interval=0).measure("quiet"):
        assert samplers() == 0
    with _meter(tmp_path).measure("sampled"):
        assert samplers() == 1
    assert samplers() == 0


def test_failed_phase_is_still_recorded(tmp_path: Path) -> None:
    meter = _meter(tmp_path)
    with pytest.raises(RuntimeError, match="boom"), meter.measure("fit"):
        raise RuntimeError("boom")
    assert [m.phase for m in meter.measurements] == ["fit"]


def test_estimate_when_rapl_is_absent(tmp_path: Path) -> None:
    with _meter(tmp_path).measure("fit") as progress:
        _burn_cpu(0.05)
    m = progress.measurement
    assert m is not None
    assert m.energy_source == "estimate"
    expected = EnergyModel().estimate(
        cpu_seconds=m.cpu_seconds, peak_rss_bytes=m.peak_rss_bytes, wall_seconds=m.wall_seconds
    )
    assert m.energy_joules == pytest.approx(expected)
    assert m.gpu_seconds == 0.0


def _zone(root: Path, name: str, label: str, energy_uj: int) -> Path:
    """One fake powercap zone directory."""
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(f"{label}\n")
    (zone / "max_energy_range_uj").write_text(f"{MAX_RANGE}\n")
    _set_energy(zone, energy_uj)
    return zone


def _set_energy(zone: Path, energy_uj: int) -> None:
    """Replace the counter in one step, as sysfs would, so a sampler never reads half a file."""
    temp = zone / "energy_uj.tmp"
    temp.write_text(f"{energy_uj}\n")
    temp.replace(zone / "energy_uj")


def test_rapl_counts_package_zones_only_and_handles_wrap(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    pkg0 = _zone(root, "intel-rapl:0", "package-0", MAX_RANGE - 1_000_000)
    pkg1 = _zone(root, "intel-rapl:1", "package-1", 5_000_000)
    core = _zone(root, "intel-rapl:0:0", "core", 0)
    psys = _zone(root, "intel-rapl:2", "psys", 0)
    with _meter(tmp_path, rapl_root=root).measure("fit") as progress:
        _set_energy(pkg0, 500_000)  # wrapped: 1.0 J to the top, then 0.5 J
        _set_energy(pkg1, 7_000_000)  # 2.0 J
        _set_energy(core, 900_000_000)
        _set_energy(psys, 900_000_000)
    m = progress.measurement
    assert m is not None
    assert m.energy_source == "rapl"
    assert m.energy_joules == pytest.approx(3.5)


def test_rapl_polls_add_up_across_several_wraps(tmp_path: Path) -> None:
    zone = _zone(tmp_path, "intel-rapl:0", "package-0", 0)
    counter = RaplCounter.open(tmp_path)
    assert counter is not None
    for value in (MAX_RANGE - 1, 10, MAX_RANGE - 1, 10):
        _set_energy(zone, value)
        assert counter.poll()
    assert counter.microjoules == 2 * MAX_RANGE + 10


def test_unreadable_rapl_counter_falls_back_to_estimate(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    (_zone(root, "intel-rapl:0", "package-0", 0) / "energy_uj").unlink()
    with _meter(tmp_path, rapl_root=root).measure("fit") as progress:
        pass
    assert progress.measurement is not None
    assert progress.measurement.energy_source == "estimate"


class FakeNvml:
    """Enough of pynvml for one GPU whose energy counter rises 5 J between reads."""

    def __init__(self, *, our_process: bool) -> None:
        self.energy_mj = 1_000_000
        self.pids = [os.getpid()] if our_process else [1]
        self.initialised = 0

    def nvmlInit(self) -> None:
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"Fake GPU"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        self.energy_mj += 5000
        return self.energy_mj

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=pid) for pid in self.pids]


@pytest.mark.parametrize("our_process", [True, False])
def test_nvml_energy_and_gpu_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, our_process: bool
) -> None:
    fake = FakeNvml(our_process=our_process)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with _meter(tmp_path).measure("fit") as progress:
        pass
    m = progress.measurement
    assert m is not None
    assert fake.initialised == 0
    estimate = EnergyModel().estimate(
        cpu_seconds=m.cpu_seconds, peak_rss_bytes=m.peak_rss_bytes, wall_seconds=m.wall_seconds
    )
    if our_process:
        assert (m.energy_source, m.gpu_seconds) == ("nvml", m.wall_seconds)
        assert m.energy_joules == pytest.approx(estimate + 5.0)
    else:
        assert (m.energy_source, m.gpu_seconds) == ("estimate", 0.0)
        assert m.energy_joules == pytest.approx(estimate)


def test_host_info(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as if not installed
    host = HostInfo.detect()
    assert host.hostname
    assert host.cpu_model
    assert host.cpu_count == os.cpu_count()
    assert host.gpu_name is None
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(our_process=True))
    assert HostInfo.detect().gpu_name == "Fake GPU"


def test_total_sums_phases_and_serialises(tmp_path: Path) -> None:
    meter = _meter(tmp_path)
    with pytest.raises(ValueError, match="no phase"):
        meter.total()
    for phase in ("load", "fit"):
        with meter.measure(phase):
            _burn_cpu(0.02)
    load, fit = meter.measurements
    total = meter.total()
    assert total.phase == "total"
    assert total.cpu_seconds == pytest.approx(load.cpu_seconds + fit.cpu_seconds)
    assert total.wall_seconds == pytest.approx(load.wall_seconds + fit.wall_seconds)
    assert total.energy_joules == pytest.approx(load.energy_joules + fit.energy_joules)
    assert total.peak_rss_bytes == max(load.peak_rss_bytes, fit.peak_rss_bytes)
    assert (total.started_at, total.finished_at) == (load.started_at, fit.finished_at)
    decoded = json.loads(json.dumps(total.to_dict()))
    assert decoded["started_at"] == load.started_at.isoformat()
    assert set(decoded) == set(PhaseMeasurement.__dataclass_fields__)


def test_total_reports_the_weakest_energy_source(tmp_path: Path) -> None:
    meter = _meter(tmp_path)
    now = datetime.now(UTC)
    rapl = PhaseMeasurement("fit", now, now, 1.0, 1.0, 10, 5.0, "rapl", 0.0)
    meter.measurements.extend([rapl, replace(rapl, phase="load", energy_source="estimate")])
    assert meter.total().energy_source == "estimate"
