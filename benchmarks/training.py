"""Training: lightnn's batch pipeline versus a plain per-image DataLoader + PIL pipeline, and full CIFAR-10 runs.

Both pipelines train the same model (ResNet-20 and the small LeNet-5, batch 128, SGD Nesterov, each in the
precision ``lightnn.train.fit`` picks for it on this machine) on the same decoded CIFAR-10 images with the same
augmentation (4-pixel pad + 32x32 random crop + horizontal flip, normalize):

- reference: torchvision's CIFAR recipe done by hand (torchvision is not a dependency): a ``Dataset`` holding the
  uint8 images whose ``__getitem__`` goes through PIL per image (``Image.fromarray`` -> pad -> crop -> flip ->
  to-tensor -> normalize), collated by ``torch.utils.data.DataLoader``;
- lightnn: :class:`lightnn.data.BatchLoader` (one gather per batch for pad+crop+flip, one fused normalize).

Repeats are interleaved (reference, lightnn, reference, ...) so machine noise hits both; the table gives the median
and IQR of images/s and the median of the per-pair ratios; the first row times the pipelines without a model.
``--from-summary`` adds the GPU runs of ``benchmarks/cifar10_full.py``, and the hand-written analysis in
``notes/training.md`` is appended. ``--runs DIR ...`` writes the full CIFAR-10 runs made on this machine with
``lightnn train`` (their ``config.yaml`` and ``metrics.jsonl``) as a section of their own, ``training_runs``
(``--runs-only``: just that, in seconds).

    python benchmarks/training.py --steps 8 --from-summary summary.json   # pipeline + width rows, the shipped sample
    python benchmarks/training.py --runs-only --runs runs/r20 runs/snv2 runs/mbv2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, cpu_name  # noqa: E402
from records import col, find_table, load_record, make_record, render, start, table, write_record  # noqa: E402
from records import rows as rows_of  # noqa: E402
from lightnn import create_model  # noqa: E402
from lightnn.data import BatchLoader, load_dataset  # noqa: E402
from lightnn.train import bf16_is_fast, pick_precision  # noqa: E402
from lightnn.train.trainer import param_groups  # noqa: E402



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


def measure(name: str, batches, model, opt, device, steps: int, amp: bool, channels_last: bool = False) -> float:
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
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # the per-image batches arrive contiguous
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


def _precision(model, loader, device) -> tuple[bool, str]:
    """bf16 + channels-last or fp32, as :func:`lightnn.train.fit` would pick it on this device."""
    if device.type == "cuda":
        return True, "bf16 + channels-last"
    if not bf16_is_fast(device):
        return False, "fp32"
    p = pick_precision(model, next(iter(loader)), device, steps=3)
    ratio = p["fp32_s"] / p["bf16_cl_s"]
    return p["amp"], f"{'bf16 + channels-last' if p['amp'] else 'fp32'} (bf16 step {ratio:.2f}x fp32's speed)"


def _value(v: str):
    try:
        return json.loads(v)
    except ValueError:
        return v


def run_throughput(args) -> list[dict]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = load_dataset(args.data, "train")
    mean, std = data.channel_stats()
    rows = []
    specs = [None] if not args.model_only else []
    specs += [m for m in args.model.split(",") if m]
    for spec in specs:
        model = opt = None
        amp, cl, prec = False, False, "-"
        ln_probe = BatchLoader(data, args.batch_size, augment=True, mean=mean, std=std, device=device)
        if spec is not None:
            torch.manual_seed(0)
            name, *kvs = spec.split(":")
            arch = {k: _value(v) for k, v in (kv.split("=", 1) for kv in kvs)}
            model = create_model(name, num_classes=data.num_classes, in_chans=data.images.shape[1], **arch).to(device)
            amp, prec = _precision(model, ln_probe, device)
            cl = amp
            if cl:
                model.to(memory_format=torch.channels_last)
            opt = torch.optim.SGD(param_groups(model, 5e-4), lr=0.05, momentum=0.9, nesterov=True)
        ref_loader = torch.utils.data.DataLoader(PerImageDataset(data.images, data.labels, mean, std),
                                                 batch_size=args.batch_size, shuffle=True, drop_last=True,
                                                 num_workers=args.workers, pin_memory=device.type == "cuda",
                                                 persistent_workers=args.workers > 0)
        ln_loader = BatchLoader(data, args.batch_size, shuffle=True, augment=True, mean=mean, std=std,
                                device=device, drop_last=True, channels_last=cl)
        steps = args.steps if spec is not None else args.steps * 4
        # warm-up both (workers start, oneDNN/cudnn pick their kernels)
        measure("ref", ref_loader, model, opt, device, 2, amp, cl)
        measure("lightnn", ln_loader, model, opt, device, 2, amp, cl)
        ref, ours = [], []
        for _ in range(args.repeats):
            ref.append(measure("ref", ref_loader, model, opt, device, steps, amp, cl))
            ours.append(measure("lightnn", ln_loader, model, opt, device, steps, amp, cl))
        ratios = [o / r for o, r in zip(ours, ref)]
        what = f"train {spec}" if spec is not None else "data pipeline only"
        rows.append({"what": what, "device": str(device), "precision": prec, "ref": _quartiles(ref),
                     "lightnn": _quartiles(ours), "ratio": _quartiles(ratios), "steps": steps,
                     "repeats": args.repeats})
        print(json.dumps(rows[-1]), flush=True)
    return rows


WIDTH_COLUMNS = [col("model"), col("width", "{value}"), col("MACs (32x32)", "{value:.1f} M", "M"),
                 col("fp32 img/s", "{value:,.0f}", "images/s"),
                 col("bf16 + channels-last img/s", "{value:,.0f}", "images/s"), col("faster"),
                 col("est. 30 epochs", "{value:.0f} min", "min")]
COMPILED_COLUMNS = [col("compiled fp32 img/s", "{value:,.0f}", "images/s"),
                    col("compiled bf16 + channels-last img/s", "{value:,.0f}", "images/s"),
                    col("compile s", "{value:.0f}", "s"), col("est. 30 epochs compiled", "{value:.0f} min", "min")]


def width_probe(specs: list[str], batch: int = 128, train_images: int = 45_000, epochs: int = 30,
                compiled: bool = False) -> list[dict]:
    """Training speed of each ``NAME[:key=value...]`` in fp32 and in bf16 + channels-last (one batch of random
    32x32 images, median of 3 steps after a warm-up, this process's threads), and the 30-epoch time it implies;
    with ``compiled`` also through ``torch.compile`` (``fit(compile=True)``) at both precisions. Returns the
    record parts (the description and the table)."""
    probes = []
    g = torch.Generator().manual_seed(0)
    for spec in specs:
        name, *kvs = spec.split(":")
        arch = {k: _value(v) for k, v in (kv.split("=", 1) for kv in kvs)}
        model = create_model(name, num_classes=10, in_chans=3, **arch)  # CIFAR images, also for LeNet-5 (1 channel)
        x, y = torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
        p = pick_precision(model, (x, y), "cpu", steps=3)
        c = pick_precision(model, (x, y), "cpu", steps=3, compile=True) if compiled else None
        probes.append((name, arch, p, c))
        print(name, arch, p, c, flush=True)
    return width_parts(probes, batch, torch.get_num_threads(), train_images, epochs)


def width_parts(probes: list[tuple[str, dict, dict, dict | None]], batch: int, threads: int,
                train_images: int = 45_000, epochs: int = 30) -> list[dict]:
    """The width table from ``(name, arch, eager probe, compiled probe or None)`` (``pick_precision``'s step times
    in seconds)."""
    compiled = any(c is not None for *_, c in probes)
    rows = []
    for name, arch, p, c in probes:
        best = batch / min(p["fp32_s"], p["bf16_cl_s"])
        row = [name, arch.get("width_mult", 1.0), _macs(name, arch), batch / p["fp32_s"], batch / p["bf16_cl_s"],
               "bf16" if p["amp"] else "fp32", epochs * train_images / best / 60]
        if compiled:
            cbest = batch / min(c["fp32_s"], c["bf16_cl_s"])
            row += [batch / c["fp32_s"], batch / c["bf16_cl_s"], c["compile_s"], epochs * train_images / cbest / 60]
        rows.append(row)
    text = (f"Training step speed per model and width (batch {batch}, {threads} threads, median of 3 "
            f"steps after a warm-up, `lightnn.train.pick_precision`); the estimate is {epochs} epochs x "
            f"{train_images:,} images at the faster precision, validation excluded"
            + ("; compiled: `torch.compile` (TorchInductor) as `lightnn train --compile` runs it, median of 3 steps "
               "after two (`pick_precision(compile=True)`, which `fit(compile=True)` uses to choose the precision), "
               "the compilation time is the first step's" if compiled else "") + ".")
    return [{"text": text}, table("widths", WIDTH_COLUMNS + (COMPILED_COLUMNS if compiled else []), rows)]


def machine(threads: int | None = None) -> dict:
    """What a training record says about this machine, taken when the measurement starts."""
    return start(threads)


THROUGHPUT_COLUMNS = [col("measured"), col("device"), col("precision"),
                      col("per-image DataLoader+PIL img/s (IQR)", "{median:,.0f} ({p25:,.0f}-{p75:,.0f})", "images/s"),
                      col("lightnn BatchLoader img/s (IQR)", "{median:,.0f} ({p25:,.0f}-{p75:,.0f})", "images/s"),
                      col("speed-up, median of pairs (IQR)", "**{median:.2f}x** ({p25:.2f}-{p75:.2f})", "x")]


def _q(q: tuple[float, float, float] | list[float]) -> dict:
    return {"median": q[0], "p25": q[1], "p75": q[2]}


def throughput_parts(rows: list[dict], batch_size: int, repeats: int, steps: int, workers: int,
                     threads: int) -> list[dict]:
    """The pipeline table from :func:`run_throughput`'s rows (images/s as (median, p25, p75))."""
    text = (f"Batch {batch_size}, the shipped 5,000-image CIFAR-10 sample (32x32), {repeats} interleaved "
            f"repeats of {steps} training steps (x4 for the data-only row); reference DataLoader with "
            f"num_workers={workers}; {threads} torch threads; each model trains in the precision "
            f"`lightnn.train.fit` picks for it here (`pick_precision`), in both pipelines.")
    return [{"text": text}, table("throughput", THROUGHPUT_COLUMNS, [
        [r["what"], r["device"], r.get("precision", "-"), _q(r["ref"]), _q(r["lightnn"]), _q(r["ratio"])]
        for r in rows])]


def _macs(name: str, arch: dict) -> float:
    """Multiply-adds (M) of the CIFAR-size model at 32x32."""
    from lightnn import profile

    return profile(create_model(name, num_classes=10, in_chans=3, **arch), (1, 3, 32, 32)).macs / 1e6


GPU_COLUMNS = [col("model"), col("width", "{value}"), col("params", "{value:.3f} M", "M"),
               col("MACs (32x32)", "{value:.1f} M", "M"), col("epochs", "{value}", "epochs"),
               col("val top-1 %", "{value:.2f}", "%"), col("val top-5 %", "{value:.2f}", "%"),
               col("GPU train time", "{value:.0f} s", "s")]


def cifar_parts(summary: dict) -> list[dict]:
    """The GPU results from benchmarks/cifar10_full.py's summary.json."""
    text = (f"Trained on {summary['device']} (torch {summary['torch']}, bf16 autocast "
            f"{'on' if summary['amp_bf16'] else 'off'}, channels-last {'on' if summary['channels_last'] else 'off'}), "
            f"{summary['train_images']:,} train / {summary['val_images']:,} validation images (seeded stratified "
            f"split of the 50,000 JPEG training images, seed 0), {summary['date']}. Recipe: "
            + ", ".join(f"{k} {v}" for k, v in summary["recipe"].items()) + ", pad-4 crop + flip.")
    rows = []
    for spec, m in summary["models"].items():
        if "error" in m:
            rows.append([spec, "-", "-", "-", "-", f"failed: {m['error'][:80]}", None, None])
            continue
        rows.append([m["model"], m["arch"].get("width_mult", 1.0), m["params"] / 1e6, _macs(m["model"], m["arch"]),
                     m["epochs"], m["val_top1"], m["val_top5"], m["train_time_s"]])
    return [{"text": text}, table("gpu", GPU_COLUMNS, rows)]


RECORDS = Path(__file__).resolve().parent / "runs"
KEPT_CPU = "Intel Xeon with AMX"  # the CPU of the rows measured before the table had a CPU column


def load_run(path: str | Path) -> tuple[dict, list[dict], str]:
    """(resolved config, per-epoch records, CPU) of a ``lightnn train`` run directory (``config.yaml`` +
    ``metrics.jsonl``; trained on this machine's CPU) or of a run record written by :func:`save_record`
    (``benchmarks/runs/<name>.json``)."""
    import yaml

    d = Path(path)
    if d.is_file() and d.suffix == ".json":
        rec = json.loads(d.read_text())
        if "config" not in rec or "epochs" not in rec:
            raise SystemExit(f"--runs {d}: not a run record (it needs 'config' and 'epochs')")
        return rec["config"], rec["epochs"], rec.get("cpu", "?")
    missing = [f for f in ("config.yaml", "metrics.jsonl") if not (d / f).is_file()]
    if missing:
        raise SystemExit(f"--runs {d}: not a `lightnn train` output directory (missing {', '.join(missing)})")
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    hist = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return cfg, hist, cpu_name()


def save_record(run_dir: str | Path, records: Path = RECORDS) -> Path:
    """Write ``records/<run name>.json``: the run's config (without the class list) and every epoch's metrics, a
    few KB that rebuild its table row after the run directory (checkpoints included) is gone. Other keys of an
    existing record of that name (``benchmarks/training_levers.py``'s scores) are kept."""
    from lightnn.utils.io import atomic_write_text

    cfg, hist, cpu = load_run(run_dir)
    rec = {"name": Path(run_dir).name, "cpu": cpu, "config": {k: v for k, v in cfg.items() if k != "classes"},
           "epochs": hist}
    path = records / f"{rec['name']}.json"
    if path.is_file():  # a record benchmarks/training_levers.py wrote keeps its scores
        rec = {**json.loads(path.read_text()), **rec}
    records.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(rec, indent=1) + "\n")


RUNS_COLUMNS = [col("model"), col("width", "{value}"), col("params", "{value:.3f} M", "M"),
                col("MACs (32x32)", "{value:.1f} M", "M"), col("epochs", "{value}", "epochs"),
                col("batch", "{value}", "images"), col("lr (warm-up)", "{lr} ({warmup})", {"warmup": "epochs"}),
                col("precision"), col("val top-1 % (best)", "**{final:.2f}** ({best:.2f})", "%"),
                col("val top-5 %", "{value:.2f}", "%"), col("train img/s (median)", "{value:,.0f}", "images/s"),
                col("wall-clock (sum of epochs)", "{value:.1f} min", "min"),
                col("median epoch x epochs", "{value:.1f} min", "min"), col("CPU")]
RECIPE_KEYS = ("momentum", "nesterov", "weight_decay", "schedule", "label_smoothing")


def _run_row(cfg: dict, hist: list[dict], cpu: str) -> list:
    arch = cfg.get("arch") or {}
    model = create_model(cfg["model"], num_classes=10, **arch)
    params = sum(p.numel() for p in model.parameters())
    last = hist[-1]
    done = last["epoch"] if last["epoch"] == cfg["epochs"] else {"value": last["epoch"], "of": cfg["epochs"],
                                                                 "fmt": "{value} of {of}"}
    prec = "bf16 + channels-last" if cfg.get("amp") else "fp32"
    probe = cfg.get("precision_probe")
    if probe:
        prec += f" (bf16 step {probe['fp32_s'] / probe['bf16_cl_s']:.2f}x fp32's speed)"
    if cfg.get("compile"):  # `--compile auto` records both timings; `--compile` alone does not
        eager, compiled = (probe or {}).get("eager"), (probe or {}).get("compiled")
        prec += ", torch.compile" + (f" (step {eager['step_s'] / compiled['step_s']:.2f}x eager's speed)"
                                     if eager and compiled else "")
    if cfg.get("ema"):
        prec += f"; validated and saved: moving average of the weights (decay {cfg['ema']})"
    if cfg.get("cutout"):
        prec += f"; Cutout {cfg['cutout']}x{cfg['cutout']}"
    return [cfg["model"], arch.get("width_mult", 1.0), params / 1e6, _macs(cfg["model"], arch), done,
            cfg["batch_size"], {"lr": cfg["lr"], "warmup": cfg["warmup_epochs"]}, prec,
            {"final": last["val_top1"], "best": max(r["val_top1"] for r in hist)}, last["val_top5"],
            statistics.median(r["images_per_s"] for r in hist), sum(r["epoch_time_s"] for r in hist) / 60,
            statistics.median(r["epoch_time_s"] for r in hist) * len(hist) / 60, cpu]


def runs_parts(run_dirs: list[str], keep: dict | None = None) -> tuple[list[dict], list[dict]]:
    """Full CIFAR-10 runs of ``lightnn train``: one row per run directory (its ``config.yaml`` and
    ``metrics.jsonl``) or run record (:func:`load_run`); the time is the sum of the epochs' wall-clock times
    (training + validation). ``keep``: an earlier ``training_runs`` record whose rows are kept, first (runs whose
    directories are gone), except a row for the same model, width and batch as a new run; a kept row without a
    CPU gets :data:`KEPT_CPU`. Returns the record parts and the recipes (the record's ``data``)."""
    recipes, new_rows = [], []
    for d in run_dirs:
        cfg, hist, cpu = load_run(d)
        if not hist:
            continue
        recipe = {k: cfg[k] for k in RECIPE_KEYS}
        if recipe not in recipes:
            recipes.append(recipe)
        new_rows.append(_run_row(cfg, hist, cpu))
    rows = []
    if keep:
        replaced = {_row_key(r) for r in new_rows}
        labels = [c["label"] for c in RUNS_COLUMNS]
        for old in rows_of(find_table(keep, "runs")):
            row = [old.get(k, KEPT_CPU if k == "CPU" else None) for k in labels]
            if _row_key(row) not in replaced:
                rows.append(row)
        recipes = [r for r in keep.get("data", {}).get("recipes", []) if r not in recipes] + recipes
    rows += new_rows
    common = "; ".join(f"momentum {r['momentum']}, Nesterov {r['nesterov']}, weight decay {r['weight_decay']} (not "
                       f"on norms/biases), {r['schedule']} schedule, label smoothing {r['label_smoothing']}"
                       for r in sorted(recipes, key=lambda r: tuple(r[k] for k in RECIPE_KEYS)))
    text = (f"Recipe: {common}; pad-4 crop + flip; 45,000 / 5,000 seeded split (seed 0) of the JPEG "
            "training images. Precision is what `fit` picked by timing both on the first batch (with "
            "`--compile auto`, also compiled against eager). Wall-clock is the sum of the epochs' times "
            "(training + validation; data decoding and compilation excluded); the last column shows what "
            "an epoch shared with another job costs it.")
    return [{"text": text}, table("runs", RUNS_COLUMNS, rows)], recipes


def _row_key(row: list) -> tuple:
    return row[0], row[1], row[5]  # model, width, batch


def runs_record(run_dirs: list[str], keep: dict | None = None, ctx: dict | None = None) -> dict:
    """The ``training_runs`` record of :func:`runs_parts`; ``ctx`` from :func:`records.start` (default: now)."""
    ctx = ctx or machine()
    parts, recipes = runs_parts(run_dirs, keep=keep)
    m = ctx["machine"] or {}
    rec = make_record("training_runs", f"Full CIFAR-10 on this machine ({m.get('cpu')}, {m.get('cores')} cores)",
                      "python benchmarks/training.py --runs-only --runs DIR ...", parts, **ctx)
    rec["data"] = {"recipes": recipes}
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="sample")
    ap.add_argument("--model", default="resnet20,lenet5:img_size=32", help="comma-separated models for the training "
                    "rows, each NAME[:key=value...] (architecture arguments)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4, help="training steps per repeat (x4 for data-only rows)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=0, help="reference DataLoader workers")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default=None)
    ap.add_argument("--model-only", action="store_true")
    ap.add_argument("--from-summary", default=None, help="summary.json of benchmarks/cifar10_full.py")
    ap.add_argument("--gpu-rows", default=None, help="JSON lines of a GPU throughput run to include")
    ap.add_argument("--runs", nargs="*", default=[], help="`lightnn train` run directories of full CIFAR-10 runs "
                    "on this machine (config.yaml + metrics.jsonl)")
    ap.add_argument("--probe-models", default="resnet20,mobilenet_v2_cifar:width_mult=0.25,"
                    "mobilenet_v2_cifar:width_mult=0.5,mobilenet_v2_cifar,shufflenet_v2_cifar:width_mult=0.5,"
                    "shufflenet_v2_cifar,igcv3_cifar:width_mult=0.125,igcv3_cifar:width_mult=0.25,"
                    "igcv3_cifar:width_mult=0.5",
                    help="models/widths whose training speed (fp32 and bf16) is tabled; '' to skip")
    ap.add_argument("--runs-only", action="store_true", help="only the table of --runs (results/training_runs.json)")
    ap.add_argument("--keep-rows", action="store_true",
                    help="keep the rows of the current results/training_runs.json (runs whose directories are gone)")
    ap.add_argument("--save-records", action="store_true",
                    help="also write each --runs directory's record (config + per-epoch metrics) to benchmarks/runs/")
    ap.add_argument("--probe-compile", action="store_true",
                    help="add torch.compile columns to the width table (each model compiles twice: minutes)")
    ap.add_argument("--probe-only", action="store_true",
                    help="only the width table with its torch.compile columns (results/training_compile.json)")
    ap.add_argument("--json-out", default=None, help="also write the measured rows as JSON lines here")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.runs_only and not args.runs:
        ap.error("--runs-only needs --runs DIR ...")
    ctx = machine(args.threads)
    if args.runs:  # a section of its own (results/training_runs.json): a finished run adds its row in seconds
        keep = None
        if args.keep_rows:
            kept = RESULTS / "training_runs.json"
            if not kept.is_file():
                ap.error(f"--keep-rows: {kept} does not exist")
            keep = load_record(kept)
        if args.save_records:
            for d in args.runs:
                if Path(d).is_dir():
                    print(f"record: {save_record(d)}")
        _emit(runs_record(args.runs, keep=keep, ctx=ctx), args.no_write)  # with notes/training_runs.md
        if args.runs_only:
            return 0
    specs = [m for m in args.probe_models.split(",") if m]
    if args.probe_only:  # the compiled width table alone; the eager one is part of the "training" section
        _emit(make_record("training_compile", "Training through torch.compile: which widths train in under an hour "
                          "here", "python benchmarks/training.py --probe-only --probe-models ...",
                          width_probe(specs, compiled=True), **ctx), args.no_write)
        return 0
    rows = run_throughput(args)
    if args.json_out:
        Path(args.json_out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    if args.gpu_rows:
        rows += [json.loads(line) for line in Path(args.gpu_rows).read_text().splitlines() if line.strip()]
    parts = [{"heading": "Pipeline throughput: lightnn batch augmentation vs per-image DataLoader + PIL", "level": 2},
             *throughput_parts(rows, args.batch_size, args.repeats, args.steps, args.workers, torch.get_num_threads())]
    if specs and torch.device(args.device or "cpu").type == "cpu":
        parts += [{"heading": "Which widths train in under an hour here", "level": 2},
                  *width_probe(specs, compiled=args.probe_compile)]
    if args.from_summary:
        summary = json.loads(Path(args.from_summary).read_text())
        parts += [{"heading": "Full CIFAR-10 on a lent GPU (45,000 / 5,000 split)", "level": 2}, *cifar_parts(summary)]
    command = "python benchmarks/training.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:]))
    _emit(make_record("training", "Training", command.strip(), parts, level=1, **ctx), args.no_write)
    return 0


def _emit(rec: dict, no_write: bool) -> None:
    print(render(rec))
    if not no_write:
        print(f"wrote {write_record(rec)}")  # with benchmarks/notes/<topic>.md as its notes


if __name__ == "__main__":
    raise SystemExit(main())
