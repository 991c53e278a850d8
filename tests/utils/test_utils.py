"""lightnn.utils: atomic writes leave the old file whole when the writer fails and give outputs the usual
permissions; Number accepts exactly the numbers its bounds allow, from flags and config values alike."""

from __future__ import annotations

import argparse
import os

import pytest

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
