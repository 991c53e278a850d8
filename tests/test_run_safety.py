"""Training runs, `lightnn run` and the CLI under bad input and faults: divergence stops a run, a seed reproduces
it bit for bit, another run's folder and a folder in use are refused, oversized architectures are refused before
they are built, refused writes and bad config values are one-line errors naming the input."""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from lightnn import create_model, pipeline
from lightnn.cli import main
from lightnn.data import ImageData
from lightnn.data.datasets import SAMPLE_PATH
from lightnn.errors import LightnnError, OutputError
from lightnn.models.size_check import check_model_args
from lightnn.train import LambdaCallback, fit
from lightnn.utils import io as lightnn_io
from lightnn.utils.runfolder import LOCK_NAME, lock_folder, lock_holder

REPO = Path(__file__).resolve().parents[1]
KW = dict(batch_size=16, lr=0.05, progress=False, verbose=False, seed=0, amp=False)
QUICK = ["--epochs", "1", "--batch-size", "8", "--val-fraction", "0.25", "--no-amp", "--no-progress"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def sample_zip(tmp_path_factory) -> Path:
    """40 images (4 per class) of the shipped CIFAR-10 sample, as an ImageFolder zip."""
    path = tmp_path_factory.mktemp("data") / "sample40.zip"
    with zipfile.ZipFile(SAMPLE_PATH) as src, zipfile.ZipFile(path, "w") as dst:
        for n in src.namelist():
            if n.endswith(".jpg") and int(Path(n).stem) < 4:
                dst.writestr(n, src.read(n))
    return path


def tiny_data(n: int = 48, k: int = 4, size: int = 8) -> ImageData:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % k
    imgs = torch.randint(0, 200, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return ImageData(imgs, labels, [f"c{i}" for i in range(k)], source="tiny")


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# -- 1. divergence ------------------------------------------------------------------------------------------------

def test_non_finite_bn_statistics_stop_the_run_before_it_is_saved(tmp_path):
    steps = []

    def poison(model):  # the 4th optimizer step (epoch 2: 48 images / 16 = 3 steps an epoch) breaks one BN buffer
        steps.append(1)
        if len(steps) == 4:
            model.features[0].bn.running_var[0] = float("inf")

    out = tmp_path / "r"
    with pytest.raises(LightnnError) as e:
        fit(create_model("resnet20", num_classes=4), tiny_data(), tiny_data(16), epochs=3, output_dir=out,
            callbacks=[LambdaCallback(on_step_end=lambda s: poison(s.model))], **KW)
    msg = str(e.value)
    assert "diverged in epoch 2" in msg and "1 buffer(s) are non-finite (features.0.bn.running_var)" in msg
    assert "lower learning rate" in msg
    assert not (out / "model.pt").exists()
    from lightnn.checkpoint import read_checkpoint

    assert read_checkpoint(out / "last.pt")["train_state"]["epoch"] == 1  # the last good epoch stays resumable
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_cli_lr_1e6_is_an_error_not_a_saved_model(tmp_path, sample_zip, capsys):
    out = tmp_path / "r"
    assert main(["train", "resnet20", "--data", str(sample_zip), "--output", str(out), *QUICK, "--lr", "1e6"]) == 2
    err = _err(capsys)
    assert "diverged in epoch 1" in err and "running_var" in err and "--lr, now 1e+06" in err
    assert not (out / "model.pt").exists() and not (out / "last.pt").exists()


# -- 2. reproducibility -------------------------------------------------------------------------------------------

def test_same_seed_gives_the_same_weights_bit_for_bit(tmp_path, sample_zip):
    def train(name: str, seed: str) -> dict:
        torch.manual_seed(len(name))  # whatever state the process is in, only --seed may matter
        assert main(["train", "resnet20", "--data", str(sample_zip), "--output", str(tmp_path / name), *QUICK,
                     "--seed", seed]) == 0
        return torch.load(tmp_path / name / "model.pt", weights_only=True)["state_dict"]

    a, b, c = train("a", "3"), train("bb", "3"), train("ccc", "4")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed is what decides


# -- 3. lost work -------------------------------------------------------------------------------------------------

def test_train_refuses_another_runs_folder_unless_resume_or_overwrite(tmp_path, sample_zip, capsys):
    out = tmp_path / "r"
    assert main(["train", "resnet20", "--data", str(sample_zip), "--output", str(out), *QUICK]) == 0
    before = {f: (out / f).read_bytes() for f in ("model.pt", "last.pt", "metrics.jsonl", "config.yaml")}
    capsys.readouterr()
    assert main(["train", "mobilenet_v2_cifar", "--data", str(sample_zip), "--output", str(out), *QUICK]) == 2
    err = _err(capsys)
    assert str(out) in err and "holds another run" in err and "--resume" in err and "--overwrite" in err
    assert {f: (out / f).read_bytes() for f in before} == before  # nothing replaced
    # --resume of another model is refused by the checkpoint; --overwrite replaces the run
    assert main(["train", "resnet32", "--data", str(sample_zip), "--output", str(out), *QUICK, "--resume"]) == 2
    assert "holds model 'resnet20', not 'resnet32'" in _err(capsys)
    assert main(["train", "resnet32", "--data", str(sample_zip), "--output", str(out), *QUICK, "--overwrite"]) == 0
    assert torch.load(out / "model.pt", weights_only=True)["model"] == "resnet32"


def test_second_lock_on_a_folder_is_refused_naming_the_holder(tmp_path):
    with lock_folder(tmp_path / "run") as lock:
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]
        with pytest.raises(LightnnError, match=f"in use by pid {os.getpid()} on "):
            with lock_folder(tmp_path / "run"):
                pass
        with pytest.raises(LightnnError, match="run folder .* is in use by pid"):
            pipeline.run(pipeline.resolve_config({}), output=tmp_path / "run", log=lambda s: None)
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released on exit
    with lock_folder(tmp_path / "run"):
        pass


def test_lightnn_run_refuses_a_folder_another_process_holds(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    # another process holding the lock as lock_folder does (flock + holder JSON), without importing torch
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, json, os, socket, sys, time\n"
                               "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
                               "os.write(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname(), "
                               "'started': 'now', 'command': 'lightnn run'}).encode())\n"
                               "print('held', flush=True)\ntime.sleep(60)\n",
         str(out / LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["run", "--output", str(out), "--epochs", "1"]) == 2
        err = _err(capsys)
        assert f"is in use by pid {holder.pid}" in err and "another --output" in err
        assert not (out / "state.json").exists() and not (out / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    assert lock_holder(out)["pid"] == holder.pid  # the killed holder's file is left; its flock is not
    with lock_folder(out):
        assert lock_holder(out)["pid"] == os.getpid()


def test_a_dead_holders_lock_is_taken_over(tmp_path):
    import fcntl
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    # the flock is still held (as by a forked child of the dead process), but the pid it names is gone
    fd = os.open(folder / LOCK_NAME, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with lock_folder(folder):
            assert lock_holder(folder)["pid"] == os.getpid()
    finally:
        os.close(fd)


def test_resumed_training_removes_partial_writes(tmp_path):
    out = tmp_path / "r"

    def stop(epoch, rec, model):
        (out / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # what a kill mid-write leaves
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(create_model("resnet20", num_classes=4), tiny_data(), None, epochs=2, output_dir=out,
            callbacks=[LambdaCallback(on_epoch_end=lambda s, rec: stop(rec["epoch"], rec, s.model))],
            **KW)
    assert (out / ".last.pt.abc123.tmp").exists()
    fit(create_model("resnet20", num_classes=4), tiny_data(), None, epochs=2, output_dir=out, resume=True, **KW)
    assert not list(out.glob(".*.tmp")) and (out / "model.pt").exists()


def test_fresh_run_deletes_the_earlier_runs_state_and_checkpoints(tmp_path, monkeypatch):
    out = tmp_path / "run"
    for f in ("state.json", "models/resnet20.pt", "train/resnet20/last.pt"):
        (out / f).parent.mkdir(parents=True, exist_ok=True)
        (out / f).write_text("{}")

    def stop(ctx):
        raise KeyboardInterrupt  # stop where the work would start

    monkeypatch.setattr(pipeline, "_stage_data", stop)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(pipeline.resolve_config({}), output=out, log=lambda s: None, fresh=True)
    assert not (out / "state.json").exists() and not (out / "models").exists() and not (out / "train").exists()
    assert (out / "config.yaml").is_file()


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_uninterrupted_weights(tmp_path, sample_zip):
    """A real SIGKILL while `lightnn train` writes its first checkpoints: --resume finishes with the weights of a run
    that was never interrupted."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "LIGHTNN_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "lightnn", "train", "resnet20", "--data", str(sample_zip), *QUICK, "--epochs", "3"]
    subprocess.run(cmd + ["--output", str(tmp_path / "a")], env=env, check=True, capture_output=True)
    out = tmp_path / "b"
    p = subprocess.Popen(cmd + ["--output", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    p.kill()
    p.wait()
    subprocess.run(cmd + ["--output", str(out), "--resume"], env=env, check=True, capture_output=True)
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(out.glob(".*.tmp"))


# -- 4. resource exhaustion ---------------------------------------------------------------------------------------

def test_oversized_architecture_is_refused_before_it_is_built(tmp_path, sample_zip, capsys):
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(LightnnError, match=r"igcv3_cifar.*width_mult=100 would have over .* parameters .*more than "
                                           r"the limit of 2\.0e\+09.*lower width_mult"):
        check_model_args("igcv3_cifar", {"width_mult": 100}, num_classes=10, bytes_per_param=0)
    n = sum(p.numel() for p in create_model("resnet20", num_classes=10).parameters())
    assert check_model_args("resnet20", {}, num_classes=10, max_params=n, bytes_per_param=0) == n  # at the limit
    with pytest.raises(LightnnError, match="resnet20' with its default arguments would have over"):
        check_model_args("resnet20", {}, num_classes=10, max_params=n - 1, bytes_per_param=0)
    out = tmp_path / "r"
    assert main(["train", "igcv3_cifar", "--arch", "width_mult=100", "--data", str(sample_zip), "--output",
                 str(out), *QUICK]) == 2
    assert "--arch width_mult=100" in _err(capsys) and not out.exists()
    with pytest.raises(LightnnError, match=r"config models\[1\] width_mult=100"):
        pipeline.resolve_config({"models": [{"name": "resnet20"}, {"name": "igcv3_cifar", "width_mult": 100}]})
    assert main(["profile", "resnet18", "--num-classes", "1000000000"]) == 2
    assert "lower --num-classes" in _err(capsys)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 500 * 1024  # KiB: nothing was allocated
    # a model that cannot be built with the arguments at all is a one-line error too; a small one passes
    with pytest.raises(LightnnError, match="igcv3_cifar.*width_mult='wide'"):
        check_model_args("igcv3_cifar", {"width_mult": "wide"})
    assert check_model_args("igcv3_cifar", {"width_mult": 0.35}, num_classes=10) == sum(
        p.numel() for p in create_model("igcv3_cifar", num_classes=10, width_mult=0.35).parameters())


# -- 5. refused writes, bad values --------------------------------------------------------------------------------

def _disk_full(monkeypatch, name: str) -> None:
    """Make the atomic writers' fsync of files called ``name`` fail as a full disk does."""
    real = os.fsync

    def fsync(fd):
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{name}."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(lightnn_io.os, "fsync", fsync)


def test_disk_full_while_training_is_one_line_naming_the_file(tmp_path, sample_zip, capsys, monkeypatch):
    _disk_full(monkeypatch, "last.pt")
    out = tmp_path / "r"
    assert main(["train", "resnet20", "--data", str(sample_zip), "--output", str(out), *QUICK]) == 2
    err = _err(capsys)
    assert f"cannot write {str(out / 'last.pt')!r}: No space left on device" in err
    assert not list(out.glob(".*.tmp"))  # the partial file is gone


@pytest.mark.parametrize("command, written", [(["compress", "{ckpt}", "--method", "channels", "--ratio", "0.25",
                                                "--output", "{tmp}/c"], "c/model.pt"),
                                               (["export", "{ckpt}", "--output", "{tmp}/e.onnx"], "e.onnx")])
def test_disk_full_in_compress_and_export_is_one_line(tmp_path, capsys, monkeypatch, command, written):
    from lightnn.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "m.pt", create_model("resnet20", num_classes=10))
    _disk_full(monkeypatch, Path(written).name)
    assert main([a.format(ckpt=ckpt, tmp=tmp_path) for a in command]) == 2
    assert f"cannot write {str(tmp_path / written)!r}: No space left on device" in _err(capsys)


def test_permission_denied_is_one_line(tmp_path, capsys, monkeypatch):
    def denied(*a, **k):  # a read-only or foreign folder, as a non-root user meets it
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "ro"))

    monkeypatch.setattr(lightnn_io.tempfile, "mkstemp", denied)
    with pytest.raises(OutputError, match="cannot write .*state.json': Permission denied"):
        lightnn_io.atomic_write_json(tmp_path / "ro" / "state.json", {})
    assert main(["run", "--output", str(tmp_path / "ro"), "--epochs", "1"]) == 2
    assert f"cannot write {str(tmp_path / 'ro' / 'config.yaml')!r}: Permission denied" in _err(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_one_line(tmp_path, sample_zip, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["train", "resnet20", "--data", str(sample_zip), "--output", str(ro / "r"), *QUICK]) == 2
        assert "Permission denied" in _err(capsys)
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("line, key", [("epochs: ten", "epochs"), ("lr: fast", "lr"), ("arch: notadict", "arch"),
                                       ("batch_size: 8.5", "batch_size"), ("augment: maybe", "augment"),
                                       ("schedule: linear", "schedule"), ("data: [1, 2]", "data"),
                                       ("lr: -1", "lr"), ("weight_decay: -0.1", "weight_decay")])
def test_train_config_values_of_the_wrong_type_or_range_are_refused(tmp_path, capsys, line, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: resnet20\n{line}\n")
    assert main(["train", "--config", str(cfg), "--output", str(tmp_path / "r")]) == 2
    err = _err(capsys)
    assert str(cfg) in err and repr(key) in err and not (tmp_path / "r").exists()


def test_train_config_numbers_yaml_reads_as_strings_are_accepted():
    from lightnn.cli.train_cmd import _check_config, add_parser
    import argparse

    actions = {}
    p = add_parser(argparse.ArgumentParser().add_subparsers())
    for a in p._actions:
        actions.setdefault(a.dest, a)
    _check_config({"lr": "1e-3", "epochs": 3, "amp": None, "compile": "auto", "arch": {"width_mult": 0.5}},
                  actions, p.get_default("_defaults"), "c.yaml")


@pytest.mark.parametrize("flag, value", [("--lr", "-1"), ("--lr", "0"), ("--epochs", "0"), ("--batch-size", "0"),
                                         ("--weight-decay", "-1e-4"), ("--epochs", "2.5"), ("--ema", "1")])
def test_out_of_range_flags_are_refused_while_parsing(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as e:
        main(["train", "resnet20", "--data", str(tmp_path / "no_such_data"), f"{flag}={value}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be" in err and repr(value) in err and "no_such_data" not in err


def test_fit_refuses_out_of_range_numbers():
    for bad in (dict(lr=-1.0), dict(batch_size=0), dict(weight_decay=-1.0), dict(epochs=0), dict(momentum=-0.5)):
        with pytest.raises(LightnnError, match=next(iter(bad))):
            fit(create_model("resnet20", num_classes=4), tiny_data(), None, **{**KW, **bad})


def test_model_that_cannot_take_the_images_is_refused_before_writing(tmp_path, sample_zip, capsys):
    out = tmp_path / "r"
    assert main(["train", "lenet5", "--data", str(sample_zip), "--output", str(out), *QUICK]) == 2
    err = _err(capsys)
    assert "model 'lenet5' cannot take the 3x32x32 images" in err and "--image-size" in err
    assert not out.exists()


@pytest.mark.parametrize("state", ["{not json", "[1, 2]", '{"config": {}, "done": ["candidates"]}'])
def test_corrupt_run_state_is_one_line(tmp_path, capsys, state):
    out = tmp_path / "run"
    out.mkdir()
    (out / "state.json").write_text(state)
    assert main(["run", "--output", str(out)]) == 2
    err = _err(capsys)
    assert str(out / "state.json") in err and "--fresh" in err


@pytest.mark.parametrize("user, key", [({"train": {"epochs": "ten"}}, "train.epochs"),
                                       ({"train": {"lr": "fast"}}, "train.lr"),
                                       ({"train": {"batch_size": 8.5}}, "train.batch_size"),
                                       ({"prune": {"target_macs": "lots"}}, "prune.target_macs"),
                                       ({"models": [{"name": "mobilenet_v2_cifar", "width_mult": -1}]}, r"models\[0\] width_mult=-1"),
                                       ({"prune": {"enabled": "yes"}}, "prune.enabled"),
                                       ({"latency": {"batches": [1, 0]}}, "latency.batches"),
                                       ({"train": 3}, "train"), ({"seed": 0.5}, "seed")])
def test_run_config_values_of_the_wrong_type_are_refused(user, key):
    with pytest.raises(LightnnError, match=key if "models" in key else f"'{key}'"):
        pipeline.resolve_config(user)


def test_run_config_normalizes_numbers_yaml_reads_as_strings():
    assert pipeline.resolve_config({"train": {"lr": "1e-3"}})["train"]["lr"] == 1e-3


# -- 6. smaller ones ----------------------------------------------------------------------------------------------

def test_unknown_run_config_keys_are_refused_naming_them(tmp_path, capsys):
    with pytest.raises(LightnnError, match=r"unknown key 'train.epoch'; allowed in 'train': epochs, batch_size"):
        pipeline.resolve_config({"train": {"epoch": 5}})
    with pytest.raises(LightnnError, match=r"unknown key 'modles'; allowed at the top level: output, seed"):
        pipeline.resolve_config({"modles": []})
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {max_images: 10}\n")
    assert main(["run", str(cfg), "--output", str(tmp_path / "o")]) == 2
    assert "'data.max_images'" in _err(capsys)


@pytest.mark.parametrize("value", ["1.0", "1.5", "0", "-0.2", "lots"])
def test_target_macs_outside_0_1_is_refused_while_parsing(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as e:
        main(["compress", str(tmp_path / "missing.pt"), "--method", "channels", "--target-macs", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --target-macs: must be a number in (0, 1) (the fraction of the MACs to keep), got {value!r}" \
        in err and "missing.pt" not in err


def test_output_folder_with_a_dot_is_accepted(tmp_path, capsys):
    from lightnn.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "m.pt", create_model("resnet20", num_classes=10))
    out = tmp_path / "r20.v2"
    assert main(["compress", str(ckpt), "--method", "channels", "--ratio", "0.25", "--output", str(out),
                 "--json"]) == 0
    assert (out / "model.pt").is_file() and (out / "report.json").is_file()
    assert main(["compress", str(ckpt), "--method", "channels", "--ratio", "0.25", "--output",
                 str(tmp_path / "x.pt")]) == 2
    assert "must be a directory" in _err(capsys)


def test_run_has_the_skip_corrupt_flag_its_data_errors_suggest(tmp_path, monkeypatch):
    seen = {}

    def load_dataset(path, split, **kw):
        seen[split] = kw["skip_corrupt"]
        return tiny_data(8)

    monkeypatch.setattr("lightnn.data.load_dataset", load_dataset)
    from lightnn.cli import build_parser

    args = build_parser().parse_args(["run", "--skip-corrupt"])
    cfg = pipeline.resolve_config({"data": {"skip_corrupt": args.skip_corrupt}})
    pipeline._stage_data(pipeline.Ctx(cfg, tmp_path, {}, print))
    assert seen == {"train": True, "val": True}
