"""`lightnn train`: train a registered model on an image dataset (single process, or DDP under torchrun)."""

from __future__ import annotations

import argparse
import json

from ..errors import LightnnError
from ._common import Number, add_command, check_value, explicit_flags, load_yaml, merge_config, track_explicit


def _compile_mode(text: str) -> str:
    """``--compile MODE``: checked while the arguments are parsed, before any data is read."""
    from ..train.trainer import check_compile_mode

    try:
        check_compile_mode(text)
    except LightnnError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _kv(text: str) -> tuple[str, object]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), yaml.safe_load(v)


def add_parser(sub):
    p = add_command(
        sub, "train", "train a model (SGD Nesterov, cosine/one-cycle, label smoothing, bf16, KD, resume, DDP)",
        ["lightnn train resnet20 --data sample --epochs 2 --output runs/r20",
         "lightnn train mobilenet_v2_cifar --data ../shared/data/cifar10-train-jpeg.tar.gz --epochs 30 "
         "--arch width_mult=0.5 --output runs/mbv2",
         "lightnn train resnet20 --config lightnn/configs/cifar10_resnet20.yaml --output runs/r20",
         "lightnn train resnet20 --data sample --epochs 4 --output runs/r20 --resume",
         "lightnn train resnet20 --data sample --epochs 2 --teacher runs/r56/model.pt --output runs/kd",
         "torchrun --nproc_per_node=2 -m lightnn train resnet20 --data sample --epochs 2 --output runs/ddp"])
    p.add_argument("model", nargs="?", help="registry name (see `lightnn list`); may come from --config")
    p.add_argument("--config", help="YAML file with any of these options (flags override it)")
    p.add_argument("--data", default="sample", help="dataset: folder, .zip, .tar.gz, CIFAR pickles, or 'sample'")
    p.add_argument("--output", default=None, help="run directory (default runs/<model>)")
    p.add_argument("--epochs", type=Number(int, 1), default=30)
    p.add_argument("--batch-size", type=Number(int, 1), default=128, help="total over all DDP processes")
    p.add_argument("--lr", type=Number(float, 0, lo_open=True), default=0.1, help="peak learning rate")
    p.add_argument("--momentum", type=Number(float, 0, 1, hi_open=True), default=0.9)
    p.add_argument("--no-nesterov", dest="nesterov", action="store_false")
    p.add_argument("--weight-decay", type=Number(float, 0), default=5e-4, help="not applied to norms and biases")
    p.add_argument("--schedule", default="cosine", choices=["cosine", "onecycle", "constant"])
    p.add_argument("--warmup-epochs", type=Number(float, 0), default=0.0)
    p.add_argument("--min-lr", type=Number(float, 0), default=0.0)
    p.add_argument("--label-smoothing", type=Number(float, 0, 1, hi_open=True), default=0.0)
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no pad+crop+flip")
    p.add_argument("--cutout", type=Number(int, 0), default=0, metavar="N",
                   help="also paint an NxN square of each training image in the mean colour (Cutout), 0 = off")
    p.add_argument("--amp", dest="amp", action="store_true", default=None, help="bf16 autocast and channels-last (default: on for CUDA; on AMX CPUs the faster of bf16 and fp32, timed on one batch)")
    p.add_argument("--no-amp", dest="amp", action="store_false")
    p.add_argument("--channels-last", dest="channels_last", action="store_true", default=None)
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE", type=_compile_mode,
                   help="train through torch.compile (TorchInductor; the first step compiles, tens of seconds); "
                        "MODE: default, reduce-overhead (CUDA graphs), max-autotune, max-autotune-no-cudagraphs, or "
                        "auto (time eager and compiled steps, keep the faster); on an AMX CPU the precision is chosen "
                        "by timing compiled steps")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--seed", type=Number(int, 0), default=0,
                   help="seed of the initial weights, shuffling, augmentation and dropout")
    p.add_argument("--val-fraction", type=Number(float, 0, 1, hi_open=True), default=0.1,
                   help="validation share carved from train")
    p.add_argument("--split-seed", type=Number(int, 0), default=0, help="seed of the train/val split")
    p.add_argument("--image-size", type=Number(int, 1), default=None, help="resize images to this square size")
    p.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images (with a warning)")
    p.add_argument("--stream", action="store_true",
                   help="stream a large ImageFolder tree (random-resized-crop, DataLoader workers) instead of caching")
    p.add_argument("--workers", type=Number(int, 0), default=4, help="DataLoader workers with --stream")
    p.add_argument("--arch", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="architecture argument for create_model, e.g. width_mult=0.5 (repeatable)")
    p.add_argument("--teacher", default=None, help="teacher checkpoint for knowledge distillation")
    p.add_argument("--kd-temperature", type=Number(float, 0, lo_open=True), default=4.0)
    p.add_argument("--kd-weight", type=Number(float, 0, 1), default=0.5)
    p.add_argument("--aux-weight", type=Number(float, 0), default=0.4, help="weight of auxiliary-head losses")
    p.add_argument("--ema", type=Number(float, 0, 1, lo_open=True, hi_open=True), default=None, metavar="DECAY",
                   help="validate and save an exponential moving average of the weights (e.g. 0.999)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt if it exists")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in OUTPUT (without it, or --resume, such a folder is refused)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--json", action="store_true", help="print the final metrics as one JSON object")
    track_explicit(p)  # precedence: typed flag > --config file > default (a typed default still wins)
    return p


def _check_config(config: dict, actions: dict[str, argparse.Action], defaults: dict, source: str) -> None:
    """Each config value must have the type (and range) its flag takes: ``epochs: ten``, ``batch_size: 8.5``,
    ``arch: notadict`` and ``amp: maybe`` are refused naming the key instead of failing later or being used."""
    from ..train.trainer import check_compile_mode

    for key, v in config.items():
        a = actions[key]
        if key == "arch":
            if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
                raise LightnnError(f"{source}: 'arch' must be a mapping of architecture arguments "
                                   f"(e.g. {{width_mult: 0.5}}), got {v!r}")
        elif v is None and defaults.get(key) is None:
            continue  # the flag's own "not given"
        elif key == "compile":
            if not isinstance(v, (bool, str)):
                raise LightnnError(f"{source}: 'compile' must be true/false or a mode name, got {v!r}")
            check_value(key, v, lambda m: check_compile_mode(m) if isinstance(m, str) else m, source)
        elif isinstance(a.type, Number):
            check_value(key, v, a.type, source)
        elif a.nargs == 0:  # store_true / store_false
            if not isinstance(v, bool):
                raise LightnnError(f"{source}: {key!r} must be true or false, got {v!r}")
        elif a.choices is not None:
            if v not in a.choices:
                raise LightnnError(f"{source}: {key!r} must be one of {list(a.choices)}, got {v!r}")
        elif not isinstance(v, str):
            raise LightnnError(f"{source}: {key!r} must be a string, got {v!r}")


def run(args) -> int:
    from .. import create_model
    from ..data import load_dataset
    from ..models.size_check import check_model_args
    from ..train import check_output, seed_everything
    from ..train import distributed as dist_utils
    from ..train import EMA, AuxLoss, Distillation, TrainConfig, fit

    actions: dict[str, argparse.Action] = {}
    for a in add_parser(argparse.ArgumentParser().add_subparsers())._actions:
        actions.setdefault(a.dest, a)  # --amp / --no-amp share a dest
    explicit_flags(args)  # untyped flags get their defaults back; typed ones are remembered
    config = {k.replace("-", "_"): v for k, v in (load_yaml(args.config) if args.config else {}).items()}
    unknown = sorted(set(config) - (set(actions) - {"help", "config"}))
    if unknown:
        raise LightnnError(f"config file {args.config!r} has unknown key(s) {unknown}; see `lightnn train --help`")
    _check_config(config, actions, args._defaults, f"config file {args.config!r}")
    cfg = merge_config(args, config)
    arch = dict(config.get("arch") or {})
    if args.arch:
        arch.update(dict(args.arch))
    model_name = cfg.get("model")
    if not model_name:
        raise LightnnError("name a model to train (positional MODEL or `model:` in --config)")
    output = cfg.get("output") or f"runs/{model_name}"
    # before the data is read: a folder holding another run is refused, and --arch is bounded (a meta-device build
    # with 1000 classes, at least as large as the real one)
    check_output(output, cfg["resume"], cfg["overwrite"])
    check_model_args(model_name, arch, what="--arch")

    device = dist_utils.init_from_env(cfg.get("device"))
    # rank 0 decodes and caches the data first so the other processes read the cache
    if dist_utils.rank() != 0:
        dist_utils.barrier()
    size = (cfg["image_size"], cfg["image_size"]) if cfg.get("image_size") else None
    common = dict(val_fraction=cfg["val_fraction"], seed=cfg["split_seed"], image_size=size,
                  skip_corrupt=cfg["skip_corrupt"])
    mean = std = None
    if cfg.get("stream"):  # large ImageFolder trees: decode per image in DataLoader workers
        from ..data import IMAGENET_MEAN, IMAGENET_STD, stream_image_folder

        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
        sc = dict(image_size=cfg.get("image_size") or 224, workers=cfg["workers"], device=device,
                  val_fraction=cfg["val_fraction"], seed=cfg["split_seed"], skip_corrupt=cfg["skip_corrupt"])
        train = stream_image_folder(cfg["data"], "train", batch_size=cfg["batch_size"] // dist_utils.world_size(), **sc)
        val = stream_image_folder(cfg["data"], "val", batch_size=256, **sc) if cfg["val_fraction"] > 0 else None
        in_chans = 3
    else:
        train = load_dataset(cfg["data"], "train", **common)
        val = load_dataset(cfg["data"], "val", **common) if cfg["val_fraction"] > 0 else None
        in_chans = train.images.shape[1]
    if dist_utils.rank() == 0:
        dist_utils.barrier()

    seed_everything(cfg["seed"])  # the initial weights depend on --seed alone
    try:
        model = create_model(model_name, num_classes=train.num_classes, in_chans=in_chans, **arch)
    except TypeError as e:  # a builder that takes **kwargs rejects an unknown argument only when it is used
        raise LightnnError(f"model {model_name!r} does not accept --arch {arch}: {e}") from None
    resolved = {"model": model_name, "arch": arch, "data": str(cfg["data"]), "output": str(output),
                "val_fraction": cfg["val_fraction"], "split_seed": cfg["split_seed"], "image_size": cfg.get("image_size"),
                "classes": train.classes, "train_images": len(train.data) if cfg.get("stream") else len(train),
                "val_images": (len(val.data) if cfg.get("stream") else len(val)) if val is not None else 0}
    tc = TrainConfig(epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"], momentum=cfg["momentum"],
                     nesterov=cfg["nesterov"], weight_decay=cfg["weight_decay"], schedule=cfg["schedule"],
                     warmup_epochs=cfg["warmup_epochs"], min_lr=cfg["min_lr"], label_smoothing=cfg["label_smoothing"],
                     augment=cfg["augment"], cutout=cfg.get("cutout") or 0, amp=cfg.get("amp"),
                     channels_last=cfg.get("channels_last"), compile=cfg.get("compile") or False, device=str(device),
                     seed=cfg["seed"], progress=cfg["progress"] and not cfg["json"], verbose=not cfg["json"],
                     mean=mean, std=std)
    # loss terms in the order they combine: (1 - w) (CE + aux) + w KD
    callbacks: list = [AuxLoss(cfg["aux_weight"])]
    if cfg.get("teacher"):
        callbacks.append(Distillation(cfg["teacher"], temperature=cfg["kd_temperature"], weight=cfg["kd_weight"]))
    if cfg.get("ema") is not None:
        callbacks.append(EMA(cfg["ema"]))
    result = fit(model, train, val, tc, callbacks=callbacks, output_dir=output, resume=cfg["resume"],
                 overwrite=cfg["overwrite"], extra_config=resolved)
    if dist_utils.rank() == 0:
        summary = {"model": model_name, "output": str(output), **result["final"],
                   "best_val_top1": result["best_val_top1"], "train_time_s": result["train_time_s"]}
        if cfg["json"]:
            print(json.dumps(summary))
        else:
            print(f"wrote {output}/model.pt (last.pt, metrics.jsonl, config.yaml)")
    dist_utils.cleanup()
    return 0
