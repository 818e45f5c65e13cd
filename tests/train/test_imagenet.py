"""ImageNet training end to end on CPU with a tiny ImageFolder of real JPEGs: run directory, exact resume,
evaluation protocols through the CLI, DDP under torchrun (gloo), and bad input."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from resrepro.errors import ResreproError
from resrepro.train import imagenet_eval
from resrepro.train.checkpoint import load_checkpoint
from resrepro.train.evaluate import evaluate_run
from resrepro.train.families import load_trained
from resrepro.train.loop import train
from resrepro.train.rundir import METRIC_COLUMNS, RunDir
from resrepro.train.spec import ImageNetSpec
from tests.imagefolder import write_imagefolder
from tests.inprocess import in_process_cli
from tests.train.killed import train_until_killed


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """3 classes × 4 train and × 2 val small JPEGs (64–96 px, assorted aspect ratios)."""
    return write_imagefolder(tmp_path_factory.mktemp("imagenet"))


def tiny(data: Path, **changes) -> ImageNetSpec:
    settings = dict(model="resnet18", width=8, batch_size=6, iters=4, milestones=(2,), eval_every=2,
                    checkpoint_every=2, workers=0, device="cpu", data_dir=str(data))
    return ImageNetSpec(**{**settings, **changes})


def cli(*args: str, torchrun: bool = False, threads: int | None = None) -> subprocess.CompletedProcess:
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"] if torchrun \
        else [sys.executable]
    threads_env = {"OMP_NUM_THREADS": str(threads)} if threads else {}
    return subprocess.run([*head, "-m", "resrepro", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **threads_env})


TRAIN_ARGS = ("train", "imagenet", "--depth", "18", "--width", "8", "--batch-size", "6", "--iters", "4",
              "--milestones", "2", "--eval-every", "2", "--workers", "0", "--device", "cpu")


def test_run_directory_holds_config_metrics_summary_checkpoint(tmp_path, data):
    summary = train(tiny(data), tmp_path / "run")
    run = RunDir(tmp_path / "run")
    config = run.read_config()
    assert config["family"] == "imagenet" and config["config_hash"] == tiny(data).config_hash()
    rows = run.read_metrics()
    assert [r["iter"] for r in rows] == [2, 4] and list(rows[0]) == list(METRIC_COLUMNS)
    assert all(r["eval_split"] == "val" and 0 <= r["eval_error"] <= 1 for r in rows)
    assert [r["lr"] for r in rows] == [0.1, pytest.approx(0.01)]
    final = summary["final"]
    assert summary["status"] == "finished" and final["eval_top5_error"] == 0.0  # 3 classes: top-3 always hits
    assert summary["skipped_images"] == {"train": 0, "val": 0}
    state = load_checkpoint(tmp_path / "run")
    assert state["step"] == 4 and state["num_classes"] == 3 and state["model"]["fc.weight"].shape == (3, 64)


def test_resume_from_a_mid_run_checkpoint_gives_the_uninterrupted_result(tmp_path, data):
    full = train(tiny(data), tmp_path / "full")

    train_until_killed(tiny(data), tmp_path / "cut", at=4)  # dies after logging iteration 4, before its checkpoint
    assert load_checkpoint(tmp_path / "cut")["step"] == 3  # 4 iterations: one checkpoint each (checkpoint_interval)
    resumed = train(tiny(data), tmp_path / "cut")
    assert resumed["final"] == full["final"]


def test_a_run_dir_with_another_config_is_refused(tmp_path, data):
    train(tiny(data, iters=2), tmp_path / "run")
    with pytest.raises(ResreproError, match="iters: 2 there, 4 now"):
        train(tiny(data), tmp_path / "run")


def test_a_run_dir_holding_only_a_config_is_taken_by_the_next_run(tmp_path, data):
    RunDir(tmp_path / "run").write_config(tiny(data, iters=2).to_dict())  # never reached a checkpoint
    assert train(tiny(data), tmp_path / "run")["status"] == "finished"
    assert RunDir(tmp_path / "run").read_config()["config_hash"] == tiny(data).config_hash()


def test_the_in_training_evaluation_is_what_eval_gives_for_the_same_weights(tmp_path, data):
    # bf16 autocast exists on a CPU: both evaluations run at the run's precision, none at a stricter one.
    summary = train(tiny(data, iters=2, precision="bf16"), tmp_path / "run")
    final, result = summary["final"], evaluate_run(tmp_path / "run", protocol="center", device="cpu", workers=0)
    assert (final["eval_error"], final["eval_top5_error"]) == (result["top1_error"], result["top5_error"])
    assert final["eval_loss"] == pytest.approx(result["loss"], rel=1e-6)
    _, model = load_trained(tmp_path / "run")
    fp32 = imagenet_eval.evaluate(model, data / "val", "center", workers=0, resize=256, crop=224)
    # What `eval` gave before, fp32 throughout, differs by bf16's rounding: 1e-4 relative on an Intel Xeon, more on
    # an AMD EPYC; two fp32 evaluations differ by float reordering at most (~1e-7).
    assert fp32["loss"] != pytest.approx(result["loss"], rel=1e-5)


def test_cli_eval_protocols_write_eval_json(tmp_path, data):
    out = tmp_path / "run"
    res = cli(*TRAIN_ARGS, "--data-dir", str(data), "--out", str(out))
    assert res.returncode == 0, res.stderr
    for protocol, extra in (("ten-crop", ()), ("multi-scale", ("--scales", "64,96"))):
        ev = cli("eval", str(out), f"--{protocol}", "--workers", "0", "--format", "json", *extra)
        assert ev.returncode == 0, ev.stderr
        written = json.loads((out / "eval" / f"{protocol}.json").read_text())
        assert written == json.loads(ev.stdout)
        assert written["protocol"] == protocol and written["images"] == 6 and 0 <= written["top1_error"] <= 1


def test_ddp_two_processes_match_one_process_with_the_same_bn_groups(tmp_path, data):
    """torchrun with 2 CPU processes (gloo) vs one process, both with BN groups of 3 in a batch of 6.

    Without SyncBN (as in the paper) each BN group is normalised alone: each rank takes one group of the batch, one
    process both in turn (gradients accumulated), and per-sample augmentation seeds give both the same crops. They
    agree up to float rounding: measured, the weights bit for bit. One thread each, as torchrun gives its ranks:
    a CPU convolution's sums depend on the number of threads, and this tiny net amplifies that over a few steps.
    """
    ddp = cli(*TRAIN_ARGS, "--bn-group", "3", "--data-dir", str(data), "--out", str(tmp_path / "ddp"), torchrun=True,
              threads=1)
    assert ddp.returncode == 0, ddp.stderr
    one = cli(*TRAIN_ARGS, "--bn-group", "3", "--data-dir", str(data), "--out", str(tmp_path / "one"), threads=1)
    assert one.returncode == 0, one.stderr
    a, b = RunDir(tmp_path / "ddp").read_metrics(), RunDir(tmp_path / "one").read_metrics()
    assert [r["iter"] for r in a] == [r["iter"] for r in b] == [2, 4]
    assert [r["train_loss"] for r in a] == pytest.approx([r["train_loss"] for r in b], rel=1e-5)
    wa, wb = (load_checkpoint(tmp_path / run)["model"] for run in ("ddp", "one"))
    assert max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa if wa[k].is_floating_point()) < 1e-5
    assert RunDir(tmp_path / "ddp").read_summary()["world_size"] == 2


def test_cli_eval_import_scores_the_given_weights_and_refuses_without(tmp_path, data, monkeypatch, capsys):
    import torch
    import torchvision

    from resrepro.train.imagenet_eval import evaluate

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    torch.save(model.state_dict(), tmp_path / "resnet18.pth")
    common = ("eval", "--import", "torchvision:resnet18", "--data-dir", str(data), "--workers", "0",
              "--device", "cpu", "--format", "json")
    code, out, err = in_process_cli(monkeypatch, capsys, *common, "--weights", str(tmp_path / "resnet18.pth"))
    assert code == 0, err
    ours = evaluate(model, data / "val", "center", normalize="mean-std", workers=0)
    assert json.loads(out)["loss"] == pytest.approx(ours["loss"], rel=1e-5)  # these weights, not fresh ones
    assert not (data / "eval").exists()  # a library model's result is printed, never written into the data

    code, _, err = in_process_cli(monkeypatch, capsys, *common)
    assert code == 2 and err.count("\n") == 1, err
    message = " ".join(err.split())
    assert "needs --weights FILE" in message and "resnet18-f37072fd.pth" in message


def _stop_requested_on_rank_1_only(rank: int, spec: ImageNetSpec, run_dir: Path, port: int) -> None:
    """One of two gloo processes: rank 1 alone has had SIGTERM since step 1; say where each rank stopped."""
    from contextlib import contextmanager
    from datetime import timedelta

    import torch.distributed as dist

    import resrepro.train.loop as trainer
    from resrepro.train.loop import TrainingInterrupted

    @contextmanager
    def stop_requests():
        yield {"signal": signal.SIGTERM if rank == 1 else None}

    trainer.stop_requests = stop_requests
    # A rank that stopped alone would wait in a collective the other never joins: fail after 60 s, not hang.
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        trainer.train(spec, run_dir)
        outcome = "finished"
    except TrainingInterrupted as e:
        outcome = str(e).split(";")[0]
    finally:
        dist.destroy_process_group()
    (run_dir.parent / f"rank{rank}").write_text(outcome)


def test_ddp_ranks_agree_on_the_step_to_stop_at(tmp_path, data):
    """SIGTERM that reaches one rank between agreement steps: both ranks train on and stop together."""
    import socket

    import torch.multiprocessing as mp

    from resrepro.train.loop import STOP_CHECK_EVERY

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = tiny(data, iters=2 * STOP_CHECK_EVERY, milestones=(), eval_every=1000, checkpoint_every=1000,
                scale=(32, 40), crop=28, bn_group=3)
    mp.spawn(_stop_requested_on_rank_1_only, (spec, tmp_path / "run", port), nprocs=2)
    stopped = f"stopped at iteration {STOP_CHECK_EVERY}"
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == [stopped, stopped]
    assert load_checkpoint(tmp_path / "run")["step"] == STOP_CHECK_EVERY


@pytest.mark.parametrize(("args", "message"), [
    (("--data-dir", "/nonexistent/imagenet"), "does not exist"),
    (("--num-classes", "2"), "the model has 2 outputs but the data has 3 classes"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, data, args, message):
    if "--data-dir" not in args:
        args = ("--data-dir", str(data), *args)
    res = cli(*TRAIN_ARGS, *args, "--out", str(tmp_path / "r"))
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and sum(line.startswith("error:") for line in res.stderr.splitlines()) == 1


def test_missing_val_split_is_a_clear_error(tmp_path, data):
    (tmp_path / "d" / "train" / "n0").mkdir(parents=True)
    with pytest.raises(ResreproError, match="missing .*val"):
        train(tiny(tmp_path / "d"), tmp_path / "run")


def test_spec_round_trips_and_rejects_cifar_nets():
    spec = ImageNetSpec(model="resnet50")
    assert ImageNetSpec.from_dict(spec.to_dict()) == spec
    assert spec.milestones == (150_000, 300_000, 450_000) and spec.batch_size == 256 and spec.iters == 600_000
    assert spec.replace(workers=2, device="cpu").config_hash() == spec.config_hash()  # runtime fields
    with pytest.raises(ResreproError, match="CIFAR net"):
        ImageNetSpec(model="resnet20")


def test_image_sizes_default_to_the_paper_and_are_checked():
    spec = ImageNetSpec()
    assert (spec.scale, spec.crop, spec.test_scales) == ((256, 480), 224, (224, 256, 384, 480, 640))
    tiny_sizes = ImageNetSpec.from_dict({**spec.to_dict(), "scale": [32, 40], "crop": 28})
    assert tiny_sizes.scale == (32, 40) and tiny_sizes.config_hash() != spec.config_hash()
    for bad in ({"crop": 300}, {"scale": (480, 256)}, {"scale": (256,)}, {"test_scales": ()}):
        with pytest.raises(ResreproError, match="scale"):
            ImageNetSpec(**bad)
    with pytest.raises(ResreproError, match="'imagenet' .* or 'digits'"):
        ImageNetSpec(dataset="cifar10")


def test_the_spec_sizes_reach_the_pipeline(tmp_path, data, monkeypatch):
    """Training on 28-px crops of 32..40-px images, validating on the center 28 of 32."""
    import resrepro.train.recipes.imagenet as trainer

    made = []

    def sets(*args, **kwargs):
        made.append(trainer_sets(*args, **kwargs))
        return made[-1]

    trainer_sets = trainer.imagenet_sets
    monkeypatch.setattr(trainer, "imagenet_sets", sets)
    assert train(tiny(data, scale=(32, 40), crop=28, iters=2), tmp_path / "run")["status"] == "finished"
    train_set, val_set = made[0]
    assert train_set[0][0][0].shape == val_set[0][0].shape == (3, 28, 28)


@pytest.mark.parametrize("depth", ["19", "20"])
def test_cli_train_imagenet_with_another_depth_names_the_imagenet_depths(tmp_path, monkeypatch, capsys, depth):
    code, _, err = in_process_cli(monkeypatch, capsys, "train", "imagenet", "--depth", depth,
                                  "--out", str(tmp_path / "run"))
    message = " ".join(err.split())
    assert code == 2 and "ImageNet depths are 18, 34, 50, 101, 152" in message and "(8, 14, 20" not in message
    assert not (tmp_path / "run").exists()


def test_cli_eval_tests_a_run_at_its_own_sizes(tmp_path, data, monkeypatch, capsys):
    """A tiny-scale run (28-px crops of 32-px images) is 10-crop tested at 32/28, not at the paper's 256/224."""
    import resrepro.train.imagenet_eval as imagenet_eval

    train(tiny(data, scale=(32, 40), crop=28, iters=2), tmp_path / "run")
    seen = []

    def spy(*args, **kwargs):
        seen.append({k: kwargs[k] for k in ("resize", "crop", "workers")})
        return real(*args, **kwargs)

    real = imagenet_eval.evaluate
    monkeypatch.setattr(imagenet_eval, "evaluate", spy)
    code, out, err = in_process_cli(monkeypatch, capsys, "eval", str(tmp_path / "run"), "--ten-crop", "--device",
                                    "cpu", "--format", "json")
    assert code == 0, err
    assert seen == [{"resize": 32, "crop": 28, "workers": 0}]  # the run's sizes and its workers
    assert json.loads((tmp_path / "run" / "eval" / "ten-crop.json").read_text()) == json.loads(out)


def test_divergence_on_an_intervals_last_step_is_an_error_and_keeps_the_finite_checkpoint(tmp_path, data,
                                                                                           monkeypatch):
    """An infinite lr for the last update of the run: every logged loss is finite, only the weights show it.
    The run must not end 'finished' with NaN weights in its checkpoint."""
    from tests.train.test_loop import infinite_lr_from

    infinite_lr_from(3, monkeypatch)
    spec = tiny(data, milestones=(3,))
    with pytest.raises(ResreproError, match=r"weights became NaN/inf before iteration 4; the last good checkpoint"
                                            r" .*iteration 3\) is kept"):
        train(spec, tmp_path / "run")
    state = load_checkpoint(tmp_path / "run")
    assert state["step"] == 3
    assert all(t.isfinite().all() for t in state["model"].values() if t.is_floating_point())
    assert RunDir(tmp_path / "run").read_summary() is None


@pytest.mark.parametrize(("bn_group", "advice"), [
    (3, "6 images per GPU (--batch-size 6 over 1 process(es)): train on more GPUs (torchrun --nproc-per-node N), "
        "each taking fewer of the batch's BN groups"),
    (6, "train on more GPUs (torchrun --nproc-per-node N), each taking fewer of the batch's BN groups, or a smaller "
        "--bn-group than 6 (BN over fewer images: another net than the paper's)"),  # one group: no GPU can take less
])
def test_cuda_out_of_memory_names_the_batch_per_gpu_and_what_to_change(tmp_path, data, monkeypatch, bn_group,
                                                                       advice):
    import torch

    from resrepro.train.step import TrainStep

    def out_of_memory(self, x, y, lr):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(TrainStep, "__call__", out_of_memory)
    with pytest.raises(ResreproError, match="CUDA out of memory in iteration 1 at 6 images per GPU") as e:
        train(tiny(data, bn_group=bn_group), tmp_path / "run")
    assert advice in str(e.value) and "\n" not in str(e.value)
