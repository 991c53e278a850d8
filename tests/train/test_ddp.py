"""DDP on CPU (gloo) with 2 processes: identical weights on every rank, complete and disjoint evaluation shards
with all-reduced metrics, and the `torchrun -m lightnn train` entry point."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from lightnn import create_model
    from lightnn.data import ImageData
    from lightnn.train import distributed, evaluate, fit

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 4
    data = ImageData(torch.randint(0, 256, (40, 3, 8, 8), generator=g, dtype=torch.uint8), labels,
                     ["a", "b", "c", "d"], source="tiny")
    val = data.subset(range(0, 40, 3))  # 14 images: not divisible by 2 ranks x batch
    torch.manual_seed(rank)  # different inits: DDP must broadcast rank 0's weights
    model = create_model("resnet20", num_classes=4)
    res = fit(model, data, val, epochs=2, batch_size=16, lr=0.05, device="cpu", progress=False, verbose=False,
              output_dir=Path(out) / "run")
    ev = evaluate(model, val, batch_size=4)
    torch.save({"state": model.state_dict(), "eval_n": ev["n"], "val_images": res["final"]["val_images"],
                "top1": ev["top1"]}, Path(out) / f"rank{rank}.pt")
    distributed.cleanup()


def test_ddp_two_cpu_processes(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]) or "running" in k or "num_batches" in k, k  # BN stats are per rank
    assert r0["eval_n"] == r1["eval_n"] == 14 and r0["val_images"] == 14  # summed over ranks, nothing twice
    assert r0["top1"] == r1["top1"]
    assert (tmp_path / "run" / "model.pt").exists() and len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_torchrun_cli(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LIGHTNN_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "lightnn", "train", "resnet20", "--data", "sample", "--epochs", "1", "--batch-size", "256",
           "--output", str(tmp_path / "run"), "--json", "--device", "cpu"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["val_images"] == 500 and summary["epoch"] == 1
    assert (tmp_path / "run" / "model.pt").exists()
