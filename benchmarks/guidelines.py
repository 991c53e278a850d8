"""ShuffleNet V2's guideline experiments (Ma et al., ECCV 2018, Sec. 2, Tables 1, 2 and 4) re-run on this CPU.

- G1: equal channel width minimizes memory access cost. A stack of 10 blocks, each a 1x1 conv c1 -> c2 and one
  c2 -> c1, at 56x56; the multiply-adds stay fixed while c1:c2 goes from 1:1 to 1:12.
- G2: excessive group convolution increases memory access cost. 10 pointwise group convs c -> c at 56x56 with
  g = 1, 2, 4, 8 groups; c grows with sqrt(g) so the multiply-adds stay fixed.
- G4: element-wise ops are not negligible. 10 ResNet bottleneck units (1x1 -> 3x3 -> 1x1) at 56x56 with the
  ReLUs and/or the shortcut removed. The paper gives only c = 32/64/128; we read c as the unit's outer width with
  ResNet's inner width c/4 (the paper does not say).

We use the paper's CPU (ARM, single-thread) channel numbers for x1, and twice and four times those for x2 and x4,
as in its tables; batch 1, one intra-op thread, PyTorch eager (NCHW) under ``torch.inference_mode``. Every speed is
also given as a ratio against the first row of its group, measured in the same run with the configurations
interleaved, next to the paper's ARM ratio. Columns MACs and memory traffic come from ``lightnn.profile``.

    python benchmarks/guidelines.py            # writes benchmarks/results/guidelines.json (about 5 minutes)
    python benchmarks/guidelines.py --quick    # fewer repeats, for a smoke run
"""

from __future__ import annotations

import argparse
from typing import Callable

import _common  # noqa: F401  (puts the repository on sys.path)
import torch
import torch.nn as nn
from _common import interleaved, ratio_stats, stats
from records import col, make_record, render, start, table, write_record

from lightnn.profile import profile

HW = 56
WIDTHS = (1, 2, 4)

# Ma et al. 2018 (ShuffleNet V2). G1 Table 1, ARM images/s: c1:c2 -> ((c1, c2) at x1, speed at x1, x2, x4)
G1_PAPER = {"1:1": ((32, 32), (76.2, 21.7, 5.3)), "1:2": ((22, 44), (72.9, 20.5, 5.1)),
            "1:6": ((13, 78), (69.1, 17.9, 4.6)), "1:12": ((9, 108), (57.6, 15.1, 4.4))}
# G2 Table 2, CPU images/s: g -> (c at x1, speed at x1, x2, x4)
G2_PAPER = {1: (64, (40.0, 10.2, 2.3)), 2: (90, (35.0, 9.5, 2.2)), 4: (128, (32.9, 8.7, 2.1)),
            8: (180, (27.8, 7.5, 1.8))}
# G4 Table 4, CPU images/s at c = 32, 64, 128: (ReLU, shortcut) -> speeds
G4_PAPER = {("yes", "yes"): (56.7, 16.9, 5.0), ("yes", "no"): (61.9, 18.8, 5.2), ("no", "yes"): (57.3, 18.2, 5.1),
            ("no", "no"): (66.3, 20.2, 5.4)}
G4_C = (32, 64, 128)


def g1_net(c1: int, c2: int) -> nn.Module:
    return nn.Sequential(*[nn.Sequential(nn.Conv2d(c1, c2, 1, bias=False), nn.Conv2d(c2, c1, 1, bias=False))
                           for _ in range(10)])


def g2_net(c: int, g: int) -> nn.Module:
    return nn.Sequential(*[nn.Conv2d(c, c, 1, groups=g, bias=False) for _ in range(10)])


def _g2_c(c: int, g: int) -> int:
    """The paper's c, rounded up to a multiple of g (its CPU row g=8, c=180 is not divisible by 8; we use 184)."""
    return -(-c // g) * g


def _g2_label(c: int, g: int) -> int | dict:
    """The c cell: the paper's c, or the c used with the paper's next to it."""
    return c if c % g == 0 else {"value": _g2_c(c, g), "paper": c, "fmt": "{value} (paper {paper})"}


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1 c -> c/4, 3x3, 1x1 c/4 -> c) with switchable ReLUs and shortcut (G4)."""

    def __init__(self, c: int, relu: bool, shortcut: bool) -> None:
        super().__init__()
        mid = c // 4
        self.conv1, self.conv2, self.conv3 = (nn.Conv2d(c, mid, 1, bias=False),
                                              nn.Conv2d(mid, mid, 3, padding=1, bias=False),
                                              nn.Conv2d(mid, c, 1, bias=False))
        self.act = nn.ReLU(inplace=True) if relu else nn.Identity()
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        if self.shortcut:
            y = y + x
        return self.act(y)


def g4_net(c: int, relu: bool, shortcut: bool) -> nn.Module:
    return nn.Sequential(*[Bottleneck(c, relu, shortcut) for _ in range(10)])


def _runner(net: nn.Module, c_in: int) -> Callable[[], torch.Tensor]:
    net.eval()
    x = torch.randn(1, c_in, HW, HW)

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return net(x)
    return run


def _experiment(title: str, groups: list[tuple[str, list[tuple[str, object, nn.Module, int, float]]]], repeats: int,
                runs_for: dict[str, int], clock: str, reduce: str) -> list[list]:
    """Each group: (width label, [(config, channels cell, net, input channels, paper speed)]); first = reference."""
    timings = {}
    for width, configs in groups:
        runners = {label: _runner(net, cin) for label, _, net, cin, _ in configs}
        print(f"{title} {width}: timing {', '.join(runners)}", flush=True)
        timings[width] = interleaved(runners, repeats=repeats, runs=runs_for[width], warmup=2, reduce=reduce,
                                     clock=clock)
    return experiment_rows(groups, timings)


def experiment_rows(groups: list[tuple[str, list[tuple[str, object, nn.Module, int, float]]]],
                    timings: dict[str, dict[str, list[float]]]) -> list[list]:
    """Table rows from each group's per-repeat times (ms): sizes from the profiler, speeds and ratios against the
    group's first configuration, repeat by repeat."""
    rows = []
    for width, configs in groups:
        ms = timings[width]
        ref_label, ref_paper = configs[0][0], configs[0][4]
        for label, chans, net, cin, paper in configs:
            rep = profile(net, (1, cin, HW, HW))
            rows.append([label, width, chans, rep.macs / 1e6, rep.memory_bytes / 1e6,
                         stats([1000.0 / t for t in ms[label]]), ratio_stats(ms[ref_label], ms[label]), paper,
                         paper / ref_paper])
    return rows


HEAD = [col("MACs (M)", "{value:.1f}", "M", "r"), col("memory traffic (MB)", "{value:.1f}", "MB", "r"),
        col("ours: images/s, median (IQR)", "{median:.1f} ({iqr:.1f})", "images/s", "r"),
        col("ours: ratio vs first, median (IQR)", "{median:.2f} ({iqr:.2f})", "x", "r"),
        col("paper ARM images/s", "{value:g}", "images/s", "r"), col("paper ratio", "{value:.2f}", "x", "r")]
G1_COLUMNS = [col("c1:c2"), col("width"), col("(c1, c2)")] + HEAD
G2_COLUMNS = [col("groups"), col("width"), col("c", "{value}", "channels", "r")] + HEAD
G4_COLUMNS = [col("variant"), col("c"), col("outer/inner")] + HEAD


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9, help="interleaved repeats per configuration (default 9)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1, like the paper's ARM runs)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="cpu: the thread's CPU time (default; immune to other jobs' time slices), wall: elapsed")
    ap.add_argument("--reduce", choices=["median", "min"], default="median",
                    help="per repeat, the median (default) or the fastest run of its burst")
    ap.add_argument("--quick", action="store_true", help="3 repeats, x1 and x2 only (smoke run)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = 3 if args.quick else args.repeats
    widths = WIDTHS[:2] if args.quick else WIDTHS
    runs_for = {"x1": 7, "x2": 5, "x4": 3, "c=32": 7, "c=64": 5, "c=128": 3}
    ctx = start(args.threads)

    g1 = [(f"x{k}", [(ratio, f"({c1 * k}, {c2 * k})", g1_net(c1 * k, c2 * k), c1 * k, speeds[i])
                     for ratio, ((c1, c2), speeds) in G1_PAPER.items()]) for i, k in enumerate(WIDTHS) if k in widths]
    g1_rows = _experiment("G1", g1, repeats, runs_for, args.clock, args.reduce)

    g2 = [(f"x{k}", [(f"g={g}", _g2_label(c * k, g), g2_net(_g2_c(c * k, g), g), _g2_c(c * k, g), speeds[i])
                     for g, (c, speeds) in G2_PAPER.items()]) for i, k in enumerate(WIDTHS) if k in widths]
    g2_rows = _experiment("G2", g2, repeats, runs_for, args.clock, args.reduce)

    g4 = [(f"c={c}", [(f"ReLU {relu}, shortcut {sc}", f"{c}/{c // 4}", g4_net(c, relu == "yes", sc == "yes"), c,
                       speeds[i])
                      for (relu, sc), speeds in G4_PAPER.items()])
          for i, c in enumerate(G4_C) if (i < 2 or not args.quick)]
    g4_rows = _experiment("G4", g4, repeats, runs_for, args.clock, args.reduce)
    rec = guidelines_record(g1_rows, g2_rows, g4_rows, repeats, args.reduce, args.clock, ctx)
    print(render(rec))
    if not args.no_write:
        print(f"\nwrote {write_record(rec)}")
    return rec


def guidelines_record(g1_rows: list[list], g2_rows: list[list], g4_rows: list[list], repeats: int, reduce: str,
                      clock: str, ctx: dict) -> dict:
    """The section's record from the three experiments' rows (:func:`experiment_rows`); ``ctx``: the machine,
    date and versions of :func:`records.start`."""
    intro = (
        "PyTorch eager, NCHW, batch 1, `torch.inference_mode`; every configuration of a group timed in the same run, "
        f"interleaved ({repeats} repeats; each repeat is a burst of 3-7 runs reduced to its {reduce}; "
        f"speed = 1 / that time; the table gives the median and IQR over repeats). Clock: "
        + ("the CPU time of the (single) computing thread, `time.thread_time`: on this shared 2-core machine "
           "(see the load average above) the OS preempts any run longer than a few ms and wall times "
           "swing several-fold, while the thread's CPU time stays put; on an idle machine the two agree. "
           if clock == "cpu" else "wall time. ")
        + "Ratios are taken "
        "repeat by repeat against the group's first row, then summarized. The paper's numbers are Ma et al. 2018 "
        "Tables 1, 2 and 4 (ARM Snapdragon 810, images/s). MACs and memory traffic (activations read + written + "
        "weights, fp32) come from `lightnn.profile`.")
    parts = [
        {"text": intro},
        {"heading": "G1: equal channel width minimizes memory access cost (10 blocks of 1x1 convs c1 -> c2 -> c1, "
                    "56x56)", "level": 3},
        table("g1", G1_COLUMNS, g1_rows),
        {"heading": "G2: group convolution raises memory access cost (10 pointwise group convs, 56x56, MACs fixed)",
         "level": 3},
        table("g2", G2_COLUMNS, g2_rows),
        {"heading": "G4: element-wise ops are not negligible (10 ResNet bottlenecks, outer width c, inner c/4, "
                    "56x56)", "level": 3},
        table("g4", G4_COLUMNS, g4_rows),
        {"text": _reading(g1_rows, g2_rows, g4_rows)},
    ]
    return make_record("guidelines", "ShuffleNet V2 guidelines G1, G2, G4 on this CPU",
                       "python benchmarks/guidelines.py", parts, **ctx)


def _reading(g1_rows: list[list], g2_rows: list[list], g4_rows: list[list]) -> str:
    """One sentence per guideline, computed from the measured and the paper's ratios (never typed in)."""
    rc, pc = 6, 8  # the columns "ours: ratio vs first" and "paper ratio"
    out = ["**Reading.**"]
    r1 = [r for r in g1_rows if r[0] == "1:12"]
    out.append("G1: at equal MACs, 1:12 runs at " + ", ".join(
        f"{r[rc]['median']:.2f}x ({r[1]}; paper {r[pc]:.2f}x)" for r in r1) + " the speed of 1:1.")
    r2 = [r for r in g2_rows if r[0] == "g=8"]
    out.append("G2: at equal MACs, g=8 runs at " + ", ".join(
        f"{r[rc]['median']:.2f}x ({r[1]}; paper {r[pc]:.2f}x)" for r in r2) + " the speed of g=1.")
    r4 = [r for r in g4_rows if r[0].startswith("ReLU no, shortcut no")]
    out.append("G4: removing both the ReLUs and the shortcut speeds the bottleneck stack up by "
               + ", ".join(f"{r[rc]['median']:.2f}x at {r[1]} (paper {r[pc]:.2f}x)" for r in r4) + ".")
    return " ".join(out)


if __name__ == "__main__":
    main()
