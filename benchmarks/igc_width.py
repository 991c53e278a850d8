"""IGCV1 at equal parameters: how wide an interleaved group convolution gets, and what it costs in time.

For a regular 3x3 conv with C channels (9 C^2 parameters) and each primary partition count L, the widest IGCV1
block (L partitions x M channels, 3x3 primary, 1x1 secondary: L M^2 9 + M L^2 parameters) that stays within the
same budget is found; the paper's claim is that it is wider (G = L M > C) whenever L/(L-1) < M S. L = 1 is the
regular conv with an extra channel-wise scaling; M = 1 (L = G) is the Xception-style depthwise + pointwise pair.

Speed: PyTorch eager, batch 8, 32x32 input, NCHW, ``torch.inference_mode``, conv layers only (no BN/ReLU), the
IGC block with its two explicit channel permutations. Each IGC block is timed interleaved with its regular conv
in the same run; the speed ratio (regular time / IGC time, > 1 is faster) is taken repeat by repeat, then the
median and IQR. Run: ``python benchmarks/igc_width.py [--repeats 9] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics

import _common  # noqa: F401  (puts the repository on sys.path)
import torch
import torch.nn as nn
from _common import interleaved, ratio_stats, stats
from records import col, make_record, render, start, table, write_record

from lightnn import profile
from lightnn.ops.conv import conv2d
from lightnn.ops.igc import IGCV1Block, igcv1_params, igcv1_width_for_params

BATCH, SIZE = 8, 32


def _rows(C: int) -> list[tuple[str, int, int]]:
    """(label, L, M) of the widest IGC blocks within 9 C^2 parameters, for several L, plus the M = 1 extreme."""
    budget = 9 * C * C
    rows = []
    for L in (1, 2, 4, 8, 16):
        M, _ = igcv1_width_for_params(budget, L)
        rows.append((f"L{L}M{M}", L, M))
    # Xception-like: M = 1, the widest L with L*9 + L^2 <= budget
    L = 1
    while igcv1_params(L + 1, 1) <= budget:
        L += 1
    rows.append((f"L{L}M1 (depthwise + pointwise)", L, 1))
    return rows


def _fn(m: nn.Module, x: torch.Tensor):
    def run() -> None:
        with torch.inference_mode():
            m(x)
    return run


COLUMNS = [col("regular C", "{value}", "channels", "l"), col("IGC block"), col("width G = L M", "{value}", "channels"),
           col("G / C", "{value:.2f}", "x"), col("params (regular -> IGC)", "{regular:,} -> {igc:,}", "params"),
           col("L/(L-1) < M S"), col("MACs per image (M), regular -> IGC", "{regular:.1f} -> {igc:.1f}", "M"),
           col("speed vs regular, median (IQR)", "{median:.2f} ({iqr:.2f})", "x"),
           col("same without the permutations", "{median:.2f} ({iqr:.2f})", "x")]
# the regular conv's own row gives its time in the speed column
REGULAR_TIME = "{median:.2f} (IQR {iqr:.2f}) ms"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9, help="interleaved repeats (default 9)")
    ap.add_argument("--runs", type=int, default=5, help="runs per burst; each burst keeps its fastest (default 5)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 64], help="regular conv widths C (default 32 64)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ctx = start(args.threads)
    measured = []
    for C in args.widths:
        reg = conv2d(C, C, 3).eval()
        x_reg = torch.randn(BATCH, C, SIZE, SIZE)
        blocks = {}
        for label, L, M in _rows(C):
            blocks[label] = (L, M, IGCV1Block(L * M, L * M, L, M, 3, norm=False, act=None).eval())
        configs = {"regular": _fn(reg, x_reg)}
        for label, (L, M, b) in blocks.items():
            x = torch.randn(BATCH, L * M, SIZE, SIZE)
            configs[label] = _fn(b, x)
            # the same convs without the two permutations: how much of the time the channel moves take
            bare = copy.deepcopy(b)
            bare.permute, bare.permute_back = nn.Identity(), nn.Identity()
            configs[label + " bare"] = _fn(bare, x)
        ms = interleaved(configs, repeats=args.repeats, runs=args.runs, warmup=2, reduce="min")
        measured.append((C, reg, blocks, ms))
    rec = igc_record(measured, args.repeats, args.runs, ctx)
    print(render(rec))
    if not args.no_write:
        print(f"wrote {write_record(rec)}")
    return rec


def igc_record(measured: list[tuple[int, nn.Module, dict, dict[str, list[float]]]], repeats: int, runs: int,
               ctx: dict) -> dict:
    """The section's record from, per regular width C, (C, the regular conv, {label: (L, M, block)}, per-repeat
    times in ms of "regular", each label and "<label> bare"); ``ctx`` from :func:`records.start`."""
    rows, summary, perm_share = [], [], []
    for C, reg, blocks, ms in measured:
        reg_params = sum(p.numel() for p in reg.parameters())
        reg_macs = profile(reg, (1, C, SIZE, SIZE)).macs
        for label, (L, M, b) in blocks.items():
            G = L * M
            p = sum(q.numel() for q in b.parameters())
            macs = profile(b, (1, G, SIZE, SIZE)).macs
            wider = "yes" if L > 1 and L / (L - 1) < M * 9 else ("n/a (L = 1)" if L == 1 else "no")
            r = ratio_stats(ms["regular"], ms[label])
            rows.append([C, label, G, G / C, {"regular": reg_params, "igc": p}, wider,
                         {"regular": reg_macs / 1e6, "igc": macs / 1e6}, r,
                         ratio_stats(ms["regular"], ms[label + " bare"])])
            summary.append((G / C, r["median"], C, label))
            perm_share.append(1 - statistics.median(ms[label + " bare"]) / statistics.median(ms[label]))
        rows.append([C, "(regular conv time, ms per batch)", C, 1.0, None, None, None,
                     {**stats(ms["regular"]), "fmt": REGULAR_TIME, "unit": "ms"}, None])

    widest = max(summary)
    fastest = max(summary, key=lambda t: t[1])
    verdict = ("none of the IGC blocks runs as fast as the regular conv" if fastest[1] < 1.0 else
               "at least one IGC block is faster than the regular conv")
    verdict += (f"; taking the two permutations out saves a median {100 * statistics.median(perm_share):.0f}% of "
                f"the IGC block's time (from {100 * min(perm_share):.0f}% to {100 * max(perm_share):.0f}% across "
                f"blocks; negative values are timing noise), so most of the gap is the group convs' lower "
                f"MACs per second in eager PyTorch (ShuffleNet V2 guideline G2)")
    intro = (
        f"A regular 3x3 conv with C channels against the widest IGCV1 block (L primary partitions of M channels, 3x3; "
        f"M secondary partitions of L channels, 1x1; two explicit permutations) within the same parameter budget "
        f"9 C^2 (IGCV1 eq.: L M^2 S + M L^2 = G^2 (S/L + 1/M)). PyTorch eager, NCHW, batch {BATCH}, "
        f"{SIZE}x{SIZE} input, `torch.inference_mode`, convs only (no BN/ReLU). Each block is timed interleaved with "
        f"the regular conv in the same run ({repeats} repeats, each a burst of {runs} runs keeping the "
        f"fastest); speed = regular time / IGC time per repeat, median (IQR). The last column times the same two "
        f"convs with the permutations taken out (not the same function: it shows what the channel moves cost). "
        f"MACs from `lightnn.profile`.")
    reading = (
        f"Widest: {widest[3]} reaches {widest[0]:.2f}x the regular width at C = {widest[2]}. At equal parameters the "
        f"MACs are about equal too; the best speed ratio measured is {fastest[1]:.2f}x ({fastest[3]}, C = "
        f"{fastest[2]}), so in PyTorch eager on this CPU {verdict}.")
    return make_record("igc_width", "IGCV1: width at equal parameters, and eager latency",
                       "python benchmarks/igc_width.py", [{"text": intro}, table("main", COLUMNS, rows),
                                                          {"text": reading}], **ctx)


if __name__ == "__main__":
    main()
