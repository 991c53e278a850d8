"""Full CIFAR-10 training on the 45,000 / 5,000 split (one GPU command): ResNet-20 for 30 epochs, then
MobileNetV2-CIFAR, ShuffleNetV2-CIFAR and IGCV3-CIFAR with the same recipe, each given an equal share of the
remaining time budget (epochs chosen from a timed probe of the training step, at most 30).

Recipe: SGD Nesterov momentum 0.9, batch 128, lr 0.1 cosine to 0, weight decay 5e-4 (not on norms/biases),
label smoothing 0.1, pad-4 crop + flip, bf16 autocast + channels-last on CUDA.

    python benchmarks/cifar10_full.py --data .devdata/cifar10-train-jpeg.tar.gz --out $OUT --budget 500

Writes ``<model>.pt`` (lightnn checkpoints) and ``summary.json`` (per-model epochs, per-epoch history, times,
params, device) into ``--out``; ``benchmarks/training.py --from-summary`` turns it into the results table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightnn import create_model  # noqa: E402
from lightnn.data import BatchLoader, load_dataset  # noqa: E402
from lightnn.train import TrainConfig, fit  # noqa: E402
from lightnn.train.losses import classification_loss  # noqa: E402
from lightnn.train.trainer import param_groups  # noqa: E402

RECIPE = dict(batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="cosine",
              label_smoothing=0.1)


def probe_epoch_seconds(name: str, arch: dict, train, device: torch.device, amp: bool, cl: bool, mean, std,
                        steps: int = 25) -> float:
    """Time ``steps`` training steps after a warm-up and scale to one epoch (+5% for validation)."""
    model = create_model(name, num_classes=train.num_classes, **arch).to(device)
    if cl:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(param_groups(model, 5e-4), lr=0.01, momentum=0.9, nesterov=True)
    loader = BatchLoader(train, RECIPE["batch_size"], shuffle=True, augment=True, mean=mean, std=std,
                         device=device, drop_last=True, channels_last=cl)
    def forever():
        while True:
            yield from loader

    it = forever()

    def step():
        x, y = next(it)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, _ = classification_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(min(8, steps)):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t) / steps
    return per_step * len(loader) * 1.05


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=500.0, help="seconds for the whole script")
    ap.add_argument("--models", default="resnet20,mobilenet_v2_cifar,shufflenet_v2_cifar,igcv3_cifar")
    ap.add_argument("--fixed-epochs", default="resnet20=30", help="models whose epochs are not adapted")
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--device", default=None)
    ap.add_argument("--probe-steps", type=int, default=25)
    ap.add_argument("--subset", type=int, default=0, help="use only this many training images (local smoke test)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    deadline = t_start + args.budget
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = cl = device.type == "cuda"
    torch.backends.cudnn.benchmark = True
    fixed = {k: int(v) for k, v in (kv.split("=") for kv in args.fixed_epochs.split(",") if kv)}

    t = time.perf_counter()
    train = load_dataset(args.data, "train", val_fraction=0.1, seed=0)
    val = load_dataset(args.data, "val", val_fraction=0.1, seed=0)
    if args.subset:
        train = train.subset(range(0, len(train), max(1, len(train) // args.subset)))
    load_s = time.perf_counter() - t
    mean, std = train.channel_stats()
    summary = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
               "torch": torch.__version__, "host_cpus": os.cpu_count(), "recipe": RECIPE, "amp_bf16": amp,
               "channels_last": cl, "train_images": len(train), "val_images": len(val), "data_load_s": load_s,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "models": {}}
    print(f"data: {len(train)} train / {len(val)} val decoded in {load_s:.1f}s on {summary['device']}", flush=True)
    names = [n for n in args.models.split(",") if n]
    for i, spec in enumerate(names):
        name, _, w = spec.partition("@")
        arch = {"width_mult": float(w)} if w else {}
        left = deadline - time.perf_counter()
        share = left / (len(names) - i)
        try:
            est = probe_epoch_seconds(name, arch, train, device, amp, cl, mean, std, args.probe_steps)
            epochs = fixed.get(name) or max(1, min(args.max_epochs, int(share / est)))
            print(f"{spec}: ~{est:.1f}s/epoch, {share:.0f}s share -> {epochs} epochs", flush=True)
            torch.manual_seed(0)
            model = create_model(name, num_classes=train.num_classes, **arch)
            params = sum(p.numel() for p in model.parameters())
            run_dir = out / "_runs" / spec
            config = TrainConfig(epochs=epochs, device=device, amp=amp, channels_last=cl, seed=0, progress=False,
                                 mean=mean, std=std, **RECIPE)
            res = fit(model, train, val, config, output_dir=run_dir,
                      extra_config={"model": name, "arch": arch, "data": "cifar10"})
            shutil.copy(run_dir / "model.pt", out / f"{spec}.pt")
            summary["models"][spec] = {"model": name, "arch": arch, "epochs": epochs, "params": params,
                                       "probe_epoch_s": est, "train_time_s": res["train_time_s"],
                                       "val_top1": res["final"].get("val_top1"), "val_top5": res["final"].get("val_top5"),
                                       "best_val_top1": res["best_val_top1"], "history": res["history"]}
        except Exception as e:  # one failing model must not cost the others their results
            summary["models"][spec] = {"model": name, "error": f"{type(e).__name__}: {e}"}
            print(f"{spec}: FAILED {type(e).__name__}: {e}", flush=True)
        finally:
            shutil.rmtree(out / "_runs", ignore_errors=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: {kk: v.get(kk) for kk in ("epochs", "val_top1", "train_time_s", "error")}
                      for k, v in summary["models"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
