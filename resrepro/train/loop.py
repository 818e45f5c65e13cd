"""The one training loop, for every family: lock and claim the run directory, resume, step, log, guard,
checkpoint, stop.

A family's recipe (``resrepro.train.recipe``, made by the registry ``resrepro.train.families``) supplies the
model, the batches and the evaluation; everything else is here once. Under torchrun every process runs this loop
(DDP); only rank 0 locks and writes files. Fast path on CUDA: data and augmentation on the device, channels_last,
bf16 autocast, torch.compile, and no host sync per step except during ResNet-110's short warm-up.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from resrepro.errors import ResreproError
from resrepro.io import remove_stale_temps
from resrepro.train.checkpoint import (
    check_config,
    checkpoint_interval,
    load_checkpoint,
    save_checkpoint,
    saved_spec,
    unwrap,
)
from resrepro.train.families import family_of, make_recipe
from resrepro.train.groups import RunningStats
from resrepro.train.progress import IntervalClock, progress_bar
from resrepro.train.provenance import provenance
from resrepro.train.recipe import Recipe
from resrepro.train.rundir import CHECKPOINT, CONFIG, METRICS, SUMMARY, RunDir
from resrepro.train.runtime import (
    TrainingInterrupted,
    agreed_stop,
    all_finite,
    all_reduce,
    compile_model,
    cudnn_benchmark,
    peak_memory,
    resolve_device,
    rng_state,
    set_rng_state,
    stop_requests,
    tensorboard,
    threads_kept,
    use_channels_last,
    use_compile,
    use_cudnn_benchmark,
)
from resrepro.train.spec import RunSpec
from resrepro.train.step import TrainStep, make_optimizer

STOP_CHECK_EVERY = 20  # steps between the ranks' agreement on a stop request (see runtime.agreed_stop)
# Steps after each (re)start that are not timed when compiling: the first compiles the graph (seconds to
# minutes), which is not the run's throughput.
UNTIMED_COMPILED_STEPS = 3


class Diverged(ResreproError):
    """The loss or the weights became NaN/inf; the last good checkpoint, if any, is kept."""


# How long the ranks wait for each other: to meet at the start (all must arrive), and in any collective after (rank 0
# alone writes a checkpoint or evaluates its share while the others wait). Past it a rank fails instead of hanging.
RANKS_TIMEOUT_S = 600


def init_distributed(local_rank: int, device: str = "auto", timeout_s: float = RANKS_TIMEOUT_S) -> str:
    """Join the process group of the env:// rendezvous (torchrun's, Slurm's or ``resrepro train --ranks``'s:
    MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE): nccl on CUDA, gloo on a CPU. Return this process's device.
    A rendezvous that does not complete within ``timeout_s`` is one line, not a hang."""
    import os
    from datetime import timedelta

    dev = resolve_device(device)
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ResreproError(f"local rank {local_rank} has no GPU of its own: this machine shows "
                                f"{torch.cuda.device_count()} (start at most that many ranks per machine)")
        torch.cuda.set_device(local_rank)
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as e:  # a missing variable, a rendezvous that timed out, a refused port
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ResreproError(f"rank {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE', '?')} could not "
                            f"join the others at {where} within {timeout_s:g} s: {why}") from None
    return f"cuda:{local_rank}" if dev.type == "cuda" else str(dev)


def _zero_accum() -> dict[str, float]:
    # This eval interval's training loss, misses and images; the images and seconds of its timed steps; and
    # images that failed to decode. Kept in the checkpoint, so a resumed interval logs what an unbroken one would.
    return {"loss": 0.0, "wrong": 0.0, "images": 0.0, "timed_images": 0.0, "timed_seconds": 0.0, "skipped": 0.0}


def train(spec: RunSpec, run_dir: str | Path, *, progress: bool = False,
          on_step: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or resume, or skip if finished) one run of any family into ``run_dir``; returns its summary.

    The run directory is locked for the whole call, before anything is read or written in it: a second process
    asking for it (same run or another) gets :class:`~resrepro.train.rundir.RunInUse` naming this one. Under
    torchrun (after ``init_distributed``) every process calls this; rank 0 locks and is the only one to write.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    # Every check that can fail comes before the config is written: a run that cannot start writes nothing.
    writer_class = tensorboard() if spec.tensorboard and rank == 0 else None
    run = RunDir(run_dir)
    with run.lock(take=rank == 0), threads_kept():
        held = run.claim(spec)  # every rank reads the same directory: the same answer everywhere
        if held and run.is_finished():
            return run.read_summary()
        if rank == 0:  # under the lock no write of ours is live: any temp file is a killed one's
            remove_stale_temps(run.path, (CONFIG, METRICS, SUMMARY, CHECKPOINT))
        device = resolve_device(spec.device)
        channels_last = _layout(spec, run, held, device)
        spec = spec.replace(channels_last=channels_last)  # recorded: config.json, checkpoints, `resrepro eval`
        recipe = make_recipe(spec, device, channels_last, rank, world)
        loop = _Loop(spec, run, recipe, device, channels_last, rank, world)
        if rank == 0 and not held:
            loop.write(run.path / CONFIG, lambda: run.write_config({**spec.to_dict(),
                                                                    "config_hash": spec.config_hash()}))
        with cudnn_benchmark(use_cudnn_benchmark(family_of(spec).fixed_shapes, device)):
            return loop.run(progress and rank == 0, on_step, writer_class)


def _layout(spec: RunSpec, run: RunDir, held: bool, device: torch.device) -> bool:
    """Whether the run trains in NHWC: as asked; else, resumed, in the layout it started in (NHWC and NCHW
    kernels round differently, so a switch would change its numbers), as its config.json records it; else its
    family's default on this device."""
    if spec.channels_last is not None:
        return spec.channels_last
    if held:
        return use_channels_last(run.read_spec().channels_last, device)
    return use_channels_last(None, device, family_of(spec).channels_last_on_cpu)


class _Loop:
    """The state of one run in training: model, optimizer, schedule, batches, and what has been logged."""

    def __init__(self, spec: RunSpec, run: RunDir, recipe: Recipe, device: torch.device, channels_last: bool,
                 rank: int, world: int) -> None:
        self.spec, self.rundir, self.recipe, self.device = spec, run, recipe, device
        self.rank, self.world, self.main = rank, world, rank == 0
        cuda = device.type == "cuda"
        torch.manual_seed(spec.seed)
        try:
            self.model = recipe.build_model().to(device)
        except (RuntimeError, MemoryError) as e:  # the allocator's refusal (CPU or CUDA), before anything is written
            if not isinstance(e, MemoryError) and "memory" not in str(e).lower():
                raise
            why = (str(e).splitlines() or [type(e).__name__])[0]
            why = why[why.lower().find("tried to allocate"):] if "tried to allocate" in why.lower() else why
            raise ResreproError(f"{spec.model} of width {spec.width} does not fit in {device.type} memory here "
                                f"({why.rstrip('.')}); choose a smaller --width") from None
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, spec.lr, spec.momentum, spec.weight_decay, device)
        self.schedule = recipe.schedule
        self.save_every = checkpoint_interval(spec)
        self.step, self.wall, self.accum, self.rows = 0, 0.0, _zero_accum(), []
        self.totals = {"timed_images": 0.0, "timed_seconds": 0.0, "skipped": 0.0}
        self.last: dict[str, Any] | None = None  # the last metrics row, unrounded
        self.saved_at: int | None = None  # the iteration of the last good checkpoint
        stream_state = self._restore() if run.checkpoint.exists() else None
        self.batches = recipe.batches(self.step, stream_state)

        def wrap(net: torch.nn.Module) -> torch.nn.Module:
            if world == 1:
                return net
            from torch.nn.parallel import DistributedDataParallel

            # BN running statistics are combined over the ranks after each step (groups.RunningStats), not taken
            # from rank 0 at each forward.
            return DistributedDataParallel(net, device_ids=[device.index] if cuda else None, forward_sync_buffers=False)

        compiled = use_compile(spec.compile, device, family_of(spec).fixed_shapes)
        self.ddp, self.forward = compile_model(self.model, wrap) if compiled else (wrap(self.model),) * 2
        # Evaluation goes through the unwrapped, uncompiled net: eval mode and a last short batch would each
        # compile another graph. It reads rank 0's BN statistics on every rank (broadcast first).
        self.eval_model = self.model
        self.clock = IntervalClock(UNTIMED_COMPILED_STEPS if compiled else 0)
        self.train_step = TrainStep(self.forward, self.optimizer, recipe.loss, spec.precision, device,
                                    recipe.micro_batches, self.ddp if world > 1 else None,
                                    RunningStats(self.model, rank, world, recipe.micro_batches) if world > 1 else None,
                                    compiled_batch=spec.batch_size // world if compiled else None)
        self.sums = self.train_step.sums

    def _restore(self) -> dict[str, Any] | None:
        state = load_checkpoint(self.rundir.checkpoint)
        check_config(saved_spec(state, self.rundir.checkpoint), self.rundir.checkpoint, self.spec,
                     self.rundir.path / CONFIG)
        # Checkpoints written before the world size was recorded come from one process: no sweep launched more.
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world and not self.recipe.same_across_worlds:
            raise ResreproError(f"{self.rundir.checkpoint} was written by {saved_world} process(es); resumed on "
                                f"{self.world} this {self.spec.family} run would compute another net: resume it on "
                                f"{saved_world}")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise ResreproError(f"{self.rundir.checkpoint} does not fit this run's {self.spec.model}: "
                                f"{str(e).splitlines()[0]}; move it away to start over") from None
        self.schedule.load_state_dict(state["schedule"])
        set_rng_state(state["rng"], self.device)
        self._keep_threads(state.get("cpu_threads"))
        self.step, self.wall = int(state["step"]), float(state["wall_s"])
        self.accum = {**_zero_accum(), **state["accum"]}
        self.totals.update(state.get("totals", {}))
        self.last = state.get("last_row")
        self.rows = self._logged_rows()
        self.saved_at = self.step
        return state.get("stream")

    def _keep_threads(self, threads: int | None) -> None:
        """On a CPU, go on with the thread count the run started with: a reduction split over another number of
        threads rounds differently, and the resumed run would not give the bits of the uninterrupted one
        (a sweep trains one-thread runs side by side; `resrepro train` takes every core)."""
        if self.device.type != "cpu" or not threads or threads == torch.get_num_threads():
            return
        if self.main:
            sys.stderr.write(f"resuming {self.rundir.path} with the {threads} CPU thread(s) it started with (this "
                             f"process has {torch.get_num_threads()}): another count would change its numbers\n")
        torch.set_num_threads(threads)

    def _logged_rows(self) -> list[dict[str, Any]]:
        """The metrics rows up to the checkpoint's iteration. Rows lost from metrics.csv (cut short, emptied,
        removed) cannot be recomputed: the checkpoint's own last row is put back, and a warning names the rest."""
        try:
            rows = [r for r in self.rundir.read_metrics() if r["iter"] <= self.step]
        except ResreproError as e:
            raise ResreproError(f"{e}: move it away and rerun to resume from {self.rundir.checkpoint} (its "
                                "weights are intact; the history it lost is not)") from None
        if self.last is not None and self.last.get("iter") not in {r["iter"] for r in rows}:
            rows = sorted([*rows, self.last], key=lambda r: r["iter"])
        every, logged = self.spec.eval_every, {r["iter"] for r in rows}
        lost = [i for i in range(every, self.step + 1, every) if i not in logged]
        if self.step == self.spec.iters and self.step % every and self.step not in logged:
            lost.append(self.step)
        if lost and self.main:
            shown = ", ".join(map(str, lost[:5])) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
            sys.stderr.write(f"warning: {self.rundir.path / METRICS} lacks the rows of iteration(s) {shown} "
                             "(damaged or removed): they cannot be recomputed; resuming with the weights intact\n")
        return rows

    def run(self, progress: bool, on_step, writer_class: type | None) -> dict[str, Any]:
        spec = self.spec
        writer = writer_class(str(self.rundir.path / "tensorboard")) if writer_class else None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.skipped_before = self.batches.skipped
        self.forward.train()
        bar = progress_bar(f"{spec.model} s{spec.seed}", spec.iters, self.step, spec.batch_size, spec.lr, progress,
                           errors=self.recipe.counts_errors)
        with stop_requests() as stop, bar as bar:
            self.clock.restart()
            while self.step < spec.iters:
                lr = self._train_step()
                if bar is not None:  # a clock check per step; figures only from the device sums, without a sync
                    bar.step(self.step, lr, self.sums)
                stopping = agreed_stop(stop["signal"] is not None, self.step, self.world, self.device, STOP_CHECK_EVERY)
                self._end_interval(lr, stopping, writer, on_step)
            summary = self._summary()
            # A stop that came after the last step's check (during the final evaluation, checkpoint or summary)
            # still wins: the summary is not written, and rerunning the command writes it from the checkpoint.
            if agreed_stop(stop["signal"] is not None, 0, self.world, self.device, 1):
                raise TrainingInterrupted(f"stopped after the last iteration ({self.step}), its checkpoint saved in "
                                          f"{self.rundir.path} — rerun the same command to finish the run")
        if writer is not None:
            writer.close()
        if self.main:
            self.write(self.rundir.path / SUMMARY, lambda: self.rundir.write_summary(summary))
        return summary

    def write(self, path: Path, write: Callable[[], None]) -> None:
        """Write one of the run's files (atomically: the previous version stays whole). A full disk, a read-only
        mount or a permission refused becomes one line naming the file and what is kept."""
        try:
            write()
        except OSError as e:
            raise ResreproError(f"cannot write {path}: {e.strerror or e} — {self._kept()}; free space or fix "
                                "permissions, then rerun the same command to resume") from None

    def _kept(self) -> str:
        if self.saved_at is None:
            return "no checkpoint had been written yet"
        return f"the last good checkpoint ({self.rundir.checkpoint}, iteration {self.saved_at}) is kept"

    def _train_step(self) -> float:
        """One SGD step over one batch (:class:`~resrepro.train.step.TrainStep`); returns its lr."""
        lr = self.schedule.lr_at(self.step)
        x, y = next(self.batches)
        try:
            wrong = self.train_step(x, y, lr)
        except torch.OutOfMemoryError:
            raise ResreproError(
                f"CUDA out of memory in iteration {self.step + 1} at {self.spec.batch_size // self.world} images "
                f"per GPU (--batch-size {self.spec.batch_size} over {self.world} process(es)): "
                f"{self.recipe.out_of_memory}") from None
        if self.schedule.warming_up:  # the only per-step host sync, for the first few hundred steps
            # The whole batch's error, over every rank: each must release the warm-up at the same step.
            self.schedule.observe(self.step, all_reduce(wrong, self.world).item() / (len(y) * self.world))
        self.step += 1
        self.clock.tick(len(y) * self.world)
        return lr

    def _end_interval(self, lr: float, stopping: bool, writer, on_step) -> None:
        spec, step = self.spec, self.step
        evaluating = step % spec.eval_every == 0 or step == spec.iters
        saving = step % self.save_every == 0 or step == spec.iters or stopping
        if not (evaluating or saving):
            return
        # float64 sums of float32 losses are exact (thousands of 24-bit terms fit in 53 bits): a checkpoint between
        # two evaluations, by the cadence or a stop, regroups them without changing a bit of train_loss.
        loss, wrong, images = all_reduce(self.sums, self.world).tolist()
        # The lap comes after the interval's one sync: before it, the GPU may still be running queued steps.
        seconds, timed_images, timed_seconds = self.clock.lap()
        self.sums.zero_()
        skipped = self.batches.skipped - self.skipped_before
        self.skipped_before = self.batches.skipped
        skipped = all_reduce(torch.tensor(float(skipped), device=self.device), self.world).item()
        self.wall += seconds
        for key, value in (("loss", loss), ("wrong", wrong), ("images", images), ("timed_images", timed_images),
                           ("timed_seconds", timed_seconds), ("skipped", skipped)):
            self.accum[key] += value
        self._guard()
        if evaluating:
            self._log(lr, writer, on_step)
        if saving and self.main:
            state = self._checkpoint_state()
            self.write(self.rundir.checkpoint, lambda: save_checkpoint(self.rundir.checkpoint, state))
            self.saved_at = step
        if stopping:
            raise TrainingInterrupted(f"stopped at iteration {step}; checkpoint saved in {self.rundir.path} — "
                                      "rerun the same command to resume")
        self.clock.restart()

    def _guard(self) -> None:
        """Stop on a non-finite loss or state, so one is never logged or checkpointed. Checked once per interval,
        not per step: a per-step check is a host sync that stalls the GPU's queue. Checking the weights as well
        catches an update that broke them on the interval's last step, whose loss was still finite."""
        finite = math.isfinite(self.accum["loss"]) and all_finite(self.model, self.optimizer)
        # Agreed over the ranks: one that raised alone would leave the others waiting in their next collective.
        if all_reduce(torch.tensor(float(not finite), device=self.device), self.world).item() == 0:
            return
        what = (f"the loss became {self.accum['loss'] / max(self.accum['images'], 1)}"
                if not math.isfinite(self.accum["loss"]) else "the weights became NaN/inf"
                if not finite else "the weights of another rank became NaN/inf")
        raise Diverged(f"{what} before iteration {self.step}; {self._kept()} — try a lower --lr")

    def _log(self, lr: float, writer, on_step) -> None:
        if self.world > 1:
            for buf in self.model.buffers():  # BN running statistics: evaluate (and save) rank 0's everywhere
                dist.broadcast(buf, 0)
        result = self.recipe.evaluate(self.eval_model)
        a, n = self.accum, max(self.accum["images"], 1)
        row = {"iter": self.step, "epoch": round(self.step * self.spec.batch_size / self.recipe.train_images, 4),
               "lr": lr, "train_loss": a["loss"] / n,
               "train_error": a["wrong"] / n if self.recipe.counts_errors else None,
               "eval_split": self.recipe.eval_split, "eval_loss": result["loss"],
               "eval_error": result["error"] if "error" in result else result["top1_error"],
               "images_per_s": a["timed_images"] / a["timed_seconds"] if a["timed_seconds"] else None,
               "wall_s": self.wall}
        if "top5_error" in result:
            row["eval_top5_error"] = result["top5_error"]
        self.rows.append(row)
        self.last = row
        for key in ("timed_images", "timed_seconds", "skipped"):
            self.totals[key] += a[key]
        self.accum = _zero_accum()
        if writer is not None:
            for k in ("train_loss", "train_error", "eval_loss", "eval_error", "lr", "images_per_s"):
                if row[k] is not None:
                    writer.add_scalar(k, row[k], self.step)
        if on_step is not None:
            on_step(self.step, row)
        if self.main:
            self.write(self.rundir.path / METRICS, lambda: self.rundir.write_metrics(self.rows))

    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(), "config_hash": self.spec.config_hash(), "step": self.step,
            "wall_s": self.wall, **self.recipe.model_info, "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "stream": self.batches.state_dict(), "accum": dict(self.accum), "totals": dict(self.totals),
            "last_row": self.last, "rng": rng_state(self.device), "world_size": self.world,
            "cpu_threads": torch.get_num_threads() if self.device.type == "cpu" else None,
        }

    def _summary(self) -> dict[str, Any]:
        spec, last = self.spec, self.last or (self.rows[-1] if self.rows else None)
        if last is None:
            raise ResreproError(f"{self.rundir.path} holds a finished checkpoint but no metrics: the run directory "
                                "is damaged; move it away and train again")
        final = {"train_error": last["train_error"], "train_loss": last["train_loss"],
                 "eval_split": last["eval_split"], "eval_error": last["eval_error"], "eval_loss": last["eval_loss"]}
        if last.get("eval_top5_error") is not None:
            final["eval_top5_error"] = last["eval_top5_error"]
        t = self.totals
        return {
            "status": "finished", "family": spec.family, "model": spec.model, "dataset": spec.dataset,
            "seed": spec.seed, "config_hash": spec.config_hash(), "iter": self.step,
            "final": {**final, **self.recipe.finish(self.eval_model)},
            **self.recipe.summary(int(t["skipped"])),
            "world_size": self.world, "wall_s": self.wall,
            "images_per_s": t["timed_images"] / t["timed_seconds"] if t["timed_seconds"] else None,
            "ms_per_iter": 1000 * self.wall / self.step if self.step else None,
            "peak_memory_bytes": peak_memory(self.device),
            "params": sum(p.numel() for p in self.model.parameters()), "provenance": provenance(self.device),
        }
