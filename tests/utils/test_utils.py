"""lightnn.utils: atomic writes leave the old file whole when the writer fails and give outputs the usual
permissions; Number accepts exactly the numbers its bounds allow, from flags and config values alike."""

from __future__ import annotations

import argparse
import os

import pytest

from lightnn.utils import machine
from lightnn.utils.checks import Number
from lightnn.utils.io import atomic_write, atomic_write_json, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    p = atomic_write_text(tmp_path / "out.txt", "old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        atomic_write(p, boom)
    assert p.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_outputs_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        p = atomic_write_json(tmp_path / "sub" / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert p.read_text().strip().startswith("{") and (p.stat().st_mode & 0o777) == 0o644


@pytest.mark.parametrize("check,ok,bad", [
    (Number(int, 1), ["8", 8, " 3"], ["8.5", 8.5, True, "ten", 0, "0"]),
    (Number(float, 0, lo_open=True), ["1e-3", 0.1, 2], [0, -1, "fast", float("nan"), float("inf"), False]),
    (Number(float, 0, 1, hi_open=True), [0, 0.5], [1, 1.5, -0.1]),
])
def test_number_accepts_exactly_its_range(check, ok, bad):
    for v in ok:
        check(v)
    for v in bad:
        with pytest.raises(argparse.ArgumentTypeError, match="must be"):
            check(v)


def test_one_cpu_reader_for_fingerprints_records_and_kernel_choices(monkeypatch, tmp_path):
    from lightnn.compress.channel import deployment_channel_multiple
    from lightnn.export.quantize import cpu_has_vnni

    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f avx512_vnni sse4_2 zzz\n")
    monkeypatch.setattr(machine, "_cpuinfo", lambda: info.read_text())
    assert machine.cpu_model() == "Test CPU 9000"
    assert machine.isa_flags() == ["sse4_2", "avx2", "avx512f", "avx512_vnni"]  # in ISA_OF_INTEREST's order
    deployment_channel_multiple.cache_clear()  # it reads the CPU once per process
    assert deployment_channel_multiple() == 16 and cpu_has_vnni()
    info.write_text("model name\t: Old CPU\nflags\t\t: fpu avx2\n")
    deployment_channel_multiple.cache_clear()  # it reads the CPU once per process
    assert deployment_channel_multiple() == 8
    assert cpu_has_vnni() == (machine.platform.machine().lower() in ("arm64", "aarch64"))  # Arm always has dot
    monkeypatch.setattr(machine, "_cpuinfo", lambda: None)
    assert machine.cpu_flags() is None and machine.isa_flags() is None and machine.cpu_model()
    deployment_channel_multiple.cache_clear()  # it reads the CPU once per process
