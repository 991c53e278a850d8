"""Training throughput: lightnn's batch pipeline versus a plain per-image DataLoader + PIL pipeline.

Both train the same model (ResNet-20, batch 128, SGD Nesterov) on the same decoded CIFAR-10 images with the same
augmentation (4-pixel pad + 32x32 random crop + horizontal flip, normalize):

- reference: torchvision's CIFAR recipe done by hand (torchvision is not a dependency): a ``Dataset`` holding the
  uint8 images whose ``__getitem__`` goes through PIL per image (``Image.fromarray`` -> pad -> crop -> flip ->
  to-tensor -> normalize), collated by ``torch.utils.data.DataLoader``;
- lightnn: :class:`lightnn.data.BatchLoader` (one gather per batch for pad+crop+flip, one fused normalize).

Repeats are interleaved (reference, lightnn, reference, ...) so machine noise hits both; the table gives the median
and IQR of images/s and the median of the per-pair ratios. ``--data-only`` rows time the pipelines without the model.
The full CIFAR-10 results (``benchmarks/cifar10_full.py`` on a GPU) are added with ``--from-summary``.

    python benchmarks/training.py                       # CPU, the shipped sample
    python benchmarks/training.py --from-summary summary.json   # also the full CIFAR-10 table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightnn import create_model  # noqa: E402
from lightnn.data import BatchLoader, load_dataset  # noqa: E402
from lightnn.train.trainer import param_groups  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "training.md"


class PerImageDataset(torch.utils.data.Dataset):
    """The per-image reference: PIL transforms on each image, as torchvision's CIFAR10 + transforms do."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std, pad: int = 4):
        self.hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = labels.numpy()
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.pad = pad

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.hwc[i])
        w, h = img.size
        img = ImageOps.expand(img, border=self.pad, fill=0)
        x0, y0 = np.random.randint(0, 2 * self.pad + 1, size=2)
        img = img.crop((x0, y0, x0 + w, y0 + h))
        if np.random.rand() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        t = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
        return (t - self.mean) / self.std, int(self.labels[i])


def _quartiles(v: list[float]) -> tuple[float, float, float]:
    q = np.percentile(v, [25, 50, 75])
    return float(q[1]), float(q[0]), float(q[2])


def measure(name: str, batches, model, opt, device, steps: int, amp: bool) -> float:
    """Images per second over ``steps`` batches (model=None: the data pipeline alone)."""
    it = iter(batches)
    n = 0
    t = time.perf_counter()
    for _ in range(steps):
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(batches)
            x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if model is not None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        n += y.numel()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def run_throughput(args) -> list[dict]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = device.type == "cuda"
    data = load_dataset(args.data, "train")
    mean, std = data.channel_stats()
    rows = []
    for with_model in ([False, True] if not args.model_only else [True]):
        model = opt = None
        if with_model:
            torch.manual_seed(0)
            model = create_model(args.model, num_classes=data.num_classes).to(device)
            opt = torch.optim.SGD(param_groups(model, 5e-4), lr=0.05, momentum=0.9, nesterov=True)
        ref_loader = torch.utils.data.DataLoader(PerImageDataset(data.images, data.labels, mean, std),
                                                 batch_size=args.batch_size, shuffle=True, drop_last=True,
                                                 num_workers=args.workers, pin_memory=device.type == "cuda",
                                                 persistent_workers=args.workers > 0)
        ln_loader = BatchLoader(data, args.batch_size, shuffle=True, augment=True, mean=mean, std=std,
                                device=device, drop_last=True)
        steps = args.steps if with_model else args.steps * 4
        # warm-up both (workers start, cudnn picks algorithms)
        measure("ref", ref_loader, model, opt, device, 2, amp)
        measure("lightnn", ln_loader, model, opt, device, 2, amp)
        ref, ours = [], []
        for _ in range(args.repeats):
            ref.append(measure("ref", ref_loader, model, opt, device, steps, amp))
            ours.append(measure("lightnn", ln_loader, model, opt, device, steps, amp))
        ratios = [o / r for o, r in zip(ours, ref)]
        what = f"train {args.model}" if with_model else "data pipeline only"
        rows.append({"what": what, "device": str(device), "ref": _quartiles(ref), "lightnn": _quartiles(ours),
                     "ratio": _quartiles(ratios), "steps": steps, "repeats": args.repeats})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"{time.strftime('%Y-%m-%d', time.gmtime())}")


def throughput_table(rows: list[dict], args) -> str:
    out = [f"Model {args.model}, batch {args.batch_size}, the shipped 5,000-image CIFAR-10 sample (32x32), "
           f"{args.repeats} interleaved repeats; reference DataLoader with num_workers={args.workers}; "
           f"{torch.get_num_threads()} torch threads.", "",
           "| measured | device | per-image DataLoader+PIL img/s (IQR) | lightnn BatchLoader img/s (IQR) | speed-up, median of pairs (IQR) |",
           "|---|---|---|---|---|"]
    for r in rows:
        f = lambda q: f"{q[0]:,.0f} ({q[1]:,.0f}-{q[2]:,.0f})"  # noqa: E731
        out.append(f"| {r['what']} | {r['device']} | {f(r['ref'])} | {f(r['lightnn'])} | "
                   f"**{r['ratio'][0]:.2f}x** ({r['ratio'][1]:.2f}-{r['ratio'][2]:.2f}) |")
    return "\n".join(out)


def cifar_table(summary: dict) -> str:
    """The full CIFAR-10 results from benchmarks/cifar10_full.py's summary.json."""
    from lightnn import profile

    lines = [f"Trained on {summary['device']} (torch {summary['torch']}, bf16 autocast "
             f"{'on' if summary['amp_bf16'] else 'off'}, channels-last {'on' if summary['channels_last'] else 'off'}), "
             f"{summary['train_images']:,} train / {summary['val_images']:,} validation images (seeded stratified "
             f"split of the 50,000 JPEG training images, seed 0), {summary['date']}. Recipe: "
             + ", ".join(f"{k} {v}" for k, v in summary["recipe"].items()) + ", pad-4 crop + flip.", "",
             "| model | width | params | MACs (32x32) | epochs | val top-1 % | val top-5 % | GPU train time | "
             "est. time on this CPU |", "|---|---|---|---|---|---|---|---|---|"]
    for spec, m in summary["models"].items():
        if "error" in m:
            lines.append(f"| {spec} | - | - | - | - | failed: {m['error'][:80]} | | | |")
            continue
        model = create_model(m["model"], num_classes=10, **m["arch"])
        try:
            macs = profile(model, (1, 3, 32, 32)).macs
            macs_s = f"{macs / 1e6:.1f} M"
        except Exception as e:  # profiler not available yet
            macs_s = f"n/a ({type(e).__name__})"
        width = m["arch"].get("width_mult", 1.0)
        cpu = m.get("cpu_images_per_s")
        est = f"{m['epochs'] * summary['train_images'] / cpu / 3600:.1f} h" if cpu else "-"
        lines.append(f"| {m['model']} | {width} | {m['params'] / 1e6:.3f} M | {macs_s} | {m['epochs']} | "
                     f"{m['val_top1']:.2f} | {m['val_top5']:.2f} | {m['train_time_s']:.0f} s | {est} |")
    return "\n".join(lines)


def cpu_images_per_s(name: str, arch: dict, steps: int = 2, batch: int = 128) -> float:
    """Training images/s of ``name`` on this machine's CPU (lightnn pipeline; for the time estimates)."""
    data = load_dataset("sample", "train")
    model = create_model(name, num_classes=10, **arch)
    opt = torch.optim.SGD(param_groups(model, 5e-4), lr=0.05, momentum=0.9, nesterov=True)
    loader = BatchLoader(data, batch, shuffle=True, augment=True, drop_last=True)
    measure("w", loader, model, opt, torch.device("cpu"), 1, False)
    return statistics.median(measure("m", loader, model, opt, torch.device("cpu"), steps, False) for _ in range(2))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="sample")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4, help="training steps per repeat (x4 for data-only rows)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=0, help="reference DataLoader workers")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default=None)
    ap.add_argument("--model-only", action="store_true")
    ap.add_argument("--from-summary", default=None, help="summary.json of benchmarks/cifar10_full.py")
    ap.add_argument("--gpu-rows", default=None, help="JSON lines of a GPU throughput run to include")
    ap.add_argument("--cpu-estimate", action="store_true", help="measure CPU img/s of each summary model")
    ap.add_argument("--json-out", default=None, help="also write the measured rows as JSON lines here")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run_throughput(args)
    if args.json_out:
        Path(args.json_out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    if args.gpu_rows:
        rows += [json.loads(line) for line in Path(args.gpu_rows).read_text().splitlines() if line.strip()]
    md = ["# Training", "", f"Machine: {machine()}.", "",
          "## Pipeline throughput: lightnn batch augmentation vs per-image DataLoader + PIL", "",
          throughput_table(rows, args)]
    if args.from_summary:
        summary = json.loads(Path(args.from_summary).read_text())
        if args.cpu_estimate:
            for m in summary["models"].values():
                if "error" not in m:
                    m["cpu_images_per_s"] = cpu_images_per_s(m["model"], m["arch"])
        md += ["", "## Full CIFAR-10 (45,000 / 5,000 split)", "", cifar_table(summary)]
        cpu_rows = [(s, m["cpu_images_per_s"]) for s, m in summary["models"].items() if m.get("cpu_images_per_s")]
        if cpu_rows:
            md += ["", "Measured CPU training throughput on this machine (2 shared cores, batch 128, lightnn "
                   "pipeline; it sets the estimated CPU times above): "
                   + ", ".join(f"{s} {v:.0f} img/s" for s, v in cpu_rows) + "."]
    text = "\n".join(md) + "\n"
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
