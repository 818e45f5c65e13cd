"""BN groups: a run's identity is its images per BN group, and any number of processes (real gloo ranks on the
CPU) computes the same net from the same groups; runs written before bn_group read and hash as they did."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from resrepro.analysis.aggregate import setting
from resrepro.errors import ResreproError
from resrepro.train.checkpoint import load_checkpoint
from resrepro.train.groups import micro_batches, rank_positions
from resrepro.train.launch import free_port, train_ranks
from resrepro.train.loop import train
from resrepro.train.rundir import RunDir
from resrepro.train.spec import CifarSpec, ImageNetSpec, spec_from_config
from tests.inprocess import in_process_cli
from tests.train.killed import train_until_killed

# Two BN groups of 8 per batch of 16, so 1 process computes both and each of 2 ranks one. Real images (the
# digits) so that the loss moves.
TINY = dict(model="resnet8", dataset="digits", width=4, batch_size=16, bn_group=8, iters=6, milestones=(4,),
            eval_every=3, checkpoint_every=3, device="cpu")
# The 2-rank and 1-process runs differ by float rounding alone (gradients all-reduced vs accumulated, running
# statistics combined vs updated in turn). Measured on this 6-step run (torch 2.14.1, CPU): the weights equal bit
# for bit, the BN running statistics within 2.4e-7 (float32's rounding at their size).
TOLERANCE = 1e-6


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return {k: v.double() for k, v in load_checkpoint(run_dir)["model"].items() if v.is_floating_point()}


@contextmanager
def one_thread() -> Iterator[None]:
    """Train in this process on one thread, as each rank does here: a CPU convolution's sums depend on the number
    of threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def assert_same_run(a: Path, b: Path) -> None:
    ra, rb = RunDir(a).read_metrics(), RunDir(b).read_metrics()
    assert [r["iter"] for r in ra] == [r["iter"] for r in rb] == [3, 6]
    for key in ("train_loss", "train_error", "eval_loss", "eval_error"):  # metrics.csv keeps 6 digits
        assert [r[key] for r in ra] == pytest.approx([r[key] for r in rb], rel=1e-5), key
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)  # BN running statistics included
    assert worst < TOLERANCE, worst


def test_rank_positions_deal_the_batchs_groups_to_the_ranks_whole():
    assert rank_positions(16, 4, 0, 1) is None  # one process: the batch as drawn
    shares = [rank_positions(16, 4, r, 2) for r in (0, 1)]
    assert sorted(shares[0] + shares[1]) == list(range(16))
    for r, share in enumerate(shares):
        for j in range(2):  # the rank's micro-batch j is the batch's group 2r + j: every 4th image from it
            assert share[j::2] == list(range(2 * r + j, 16, 4))


def test_ranks_that_cannot_share_the_groups_evenly_are_refused_in_one_line():
    assert micro_batches(256, 32, 1) == 8 and micro_batches(256, 32, 8) == 1 and micro_batches(256, 32, 2) == 4
    with pytest.raises(ResreproError, match="3 processes cannot share a batch of 256 in BN groups of 32"):
        micro_batches(256, 32, 3)


def test_a_bn_group_that_does_not_divide_the_batch_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    code, _, err = in_process_cli(monkeypatch, capsys, "train", "cifar", "--batch-size", "16", "--bn-group", "6",
                                  "--out", str(tmp_path / "run"))
    assert code == 2 and err.count("\n") == 1, err
    assert "--bn-group 6 must divide --batch-size 16" in " ".join(err.split())
    assert not (tmp_path / "run").exists()


def test_the_paper_s_bn_groups_are_the_defaults_and_one_group_hashes_as_before():
    assert CifarSpec().bn_group == 64 and CifarSpec(batch_size=32).bn_group == 32  # a smaller batch: one group
    assert ImageNetSpec().bn_group == 32 and ImageNetSpec(batch_size=6).bn_group == 6
    # A CIFAR-10 run written before bn_group (batch 128): one group of 128, its hash as then.
    old = {**CifarSpec(bn_group=128).to_dict()}
    del old["bn_group"]
    spec = spec_from_config(old)
    assert spec.bn_group == 128 and spec == CifarSpec(bn_group=128)
    assert spec.config_hash() == CifarSpec(bn_group=128).config_hash() != CifarSpec().config_hash()
    assert "bn_group" not in spec.identity()  # the identity every earlier run was hashed from
    # ImageNet recorded accumulate: batch 256 in 8 micro-batches is BN over 32, today's default, one hash.
    old = {k: v for k, v in ImageNetSpec().to_dict().items() if k != "bn_group"}
    assert spec_from_config({**old, "accumulate": 8}) == ImageNetSpec()
    assert spec_from_config({**old, "accumulate": 1}).bn_group == 256
    assert ImageNetSpec().identity()["accumulate"] == 8 and "bn_group" not in ImageNetSpec().identity()
    assert spec_from_config({**old, "accumulate": 1}).config_hash() == ImageNetSpec(bn_group=256).config_hash()
    # Seeds written before and after bn_group are one experiment; another BN group is another experiment.
    new = CifarSpec(bn_group=128, seed=1).to_dict()
    assert setting(old | {"accumulate": 8, "family": "imagenet"}) == setting(ImageNetSpec(seed=3).to_dict())
    assert setting({k: v for k, v in new.items() if k != "bn_group"}) == setting(new) != setting(
        CifarSpec(seed=1).to_dict())
    with pytest.raises(ResreproError, match="accumulate 3 does not divide batch_size 256"):
        spec_from_config({**old, "accumulate": 3})


def test_two_ranks_train_the_net_one_process_trains(tmp_path):
    """``resrepro train cifar --ranks 2``: 2 gloo ranks, one BN group each, against 1 process computing both
    groups in turn: the same losses, weights and BN running statistics up to float rounding."""
    import subprocess
    import sys

    spec = CifarSpec(**TINY)
    with one_thread():
        one = train(spec, tmp_path / "one")
    args = ("train", "cifar", "--n", "1", "--dataset", "digits", "--width", "4", "--batch-size", "16",
            "--bn-group", "8", "--iters", "6", "--milestones", "4", "--eval-every", "3", "--augment", "--device", "cpu",
            "--out", str(tmp_path / "two"))
    res = subprocess.run([sys.executable, "-m", "resrepro", *args, "--ranks", "2"], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    assert "BN over 8 images over 2 processes" in " ".join(res.stderr.split())
    two = RunDir(tmp_path / "two").read_summary()
    assert one["config_hash"] == two["config_hash"] and two["world_size"] == 2
    assert load_checkpoint(tmp_path / "two")["world_size"] == 2
    assert_same_run(tmp_path / "one", tmp_path / "two")


def test_a_run_resumed_on_another_number_of_ranks_computes_the_same_net(tmp_path, monkeypatch):
    """Killed after iteration 3 in one process, resumed on 2 ranks: as if never stopped."""
    spec = CifarSpec(**TINY)
    with one_thread():
        train(spec, tmp_path / "whole")
        train_until_killed(spec, tmp_path / "resumed", at=3)  # its last checkpoint: iteration 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the ranks'
    train_ranks(spec, tmp_path / "resumed", 2)
    assert_same_run(tmp_path / "whole", tmp_path / "resumed")


def _poison_rank_1(rank: int, port: int, spec: CifarSpec, run_dir: Path) -> None:
    """One of 2 gloo ranks: rank 1's BN statistics become NaN after iteration 3; say what each rank raised."""
    from resrepro.train.loop import Diverged, init_distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    import torch.distributed as dist

    init_distributed(rank, "cpu", timeout_s=60)  # a rank left waiting fails after 60 s instead of hanging

    import resrepro.train.recipes.cifar as cifar

    built: list[torch.nn.Module] = []
    build = cifar.build_cifar_model
    cifar.build_cifar_model = lambda *args: built.append(build(*args)) or built[-1]  # the loop's own net

    def poison(step: int, row: dict) -> None:
        if rank == 1:
            next(m for m in built[0].modules() if isinstance(m, torch.nn.BatchNorm2d)).running_mean.fill_(math.nan)

    try:
        train(spec, run_dir, on_step=poison)
        outcome = "finished"
    except Diverged as e:
        outcome = str(e)
    finally:
        dist.destroy_process_group()
    (run_dir.parent / f"rank{rank}").write_text(outcome)


def test_non_finite_statistics_on_one_rank_stop_every_rank(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_poison_rank_1, (free_port(), CifarSpec(**TINY), tmp_path / "run"), nprocs=2, join=True)
    said = [(tmp_path / f"rank{r}").read_text() for r in (0, 1)]
    # Poisoned after iteration 3, found at the next check (checkpoints every 2 iterations in a 6-iteration run).
    assert said[0].startswith("the weights of another rank became NaN/inf before iteration 4"), said
    assert said[1].startswith("the weights became NaN/inf before iteration 4"), said
    state = load_checkpoint(tmp_path / "run")  # the last good checkpoint is kept
    assert state["step"] == 2 and all(t.isfinite().all() for t in state["model"].values() if t.is_floating_point())


def test_a_rank_that_cannot_meet_the_others_fails_in_one_line(monkeypatch):
    import torch.distributed as dist

    from resrepro.train.loop import init_distributed

    port = free_port()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")  # rank 1 never comes
    with pytest.raises(ResreproError, match=f"rank 0 of 2 could not join the others at 127.0.0.1:{port} within 2 s"
                       ) as e:
        init_distributed(0, "cpu", timeout_s=2)
    assert "\n" not in str(e.value) and not dist.is_initialized()
