"""`resrepro sweep EXPERIMENT`: train every run an artefact still lacks, then render it."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from resrepro.cli.common import Format, app, check_output, err, fail, print_records, say_claims

if TYPE_CHECKING:
    from resrepro.sweep import PlanItem

class Executor(str, Enum):
    local = "local"
    slurm = "slurm"
    debug = "debug"


@app.command()
def sweep(
    experiment: str | None = typer.Argument(
        None, help="An experiment (fig1, fig6, table6, ...; see --list) or a path to a .toml file."),
    scale: str = typer.Option("full", metavar="tiny|full",
                              help="tiny: small data, CPU minutes; full: the paper's recipe."),
    seeds: int | None = typer.Option(None, min=1, help="Train seeds 0..K-1 of every model instead."),
    runs: Path = typer.Option(Path("runs"), help="Runs root; a run goes to RUNS/GROUP/SCALE/MODEL-sSEED."),
    out: Path | None = typer.Option(None, help="Output folder [default: results/EXPERIMENT/SCALE]."),
    gpus: str | None = typer.Option(
        None, help="Local GPUs, e.g. 0,1: one worker process per GPU. Default: on a machine without a GPU, "
        "--parallel runs at a time on its CPU; with one, one run at a time on it."),
    gpus_per_run: int = typer.Option(1, min=1, help="Local: train each run on this many of --gpus, one DDP rank "
                                     "per GPU (--gpus 0,1,2,3 --gpus-per-run 2: two runs at a time). The run's BN "
                                     "groups stay as its recipe sets them: the same net on any number of GPUs."),
    executor: Executor = typer.Option(
        Executor.local, help="local; slurm: a job array through submitit; debug: the slurm path in-process."),
    partition: str | None = typer.Option(None, help="Slurm: the partition [default: the cluster's]."),
    time_min: int = typer.Option(24 * 60, min=1, help="Slurm: time limit per run, minutes; a run that outlives it "
                                 "checkpoints (warned by SIGUSR2), is requeued and resumes."),
    gpus_per_job: int = typer.Option(1, min=0, help="Slurm: GPUs per run, one DDP rank each."),
    ranks_per_job: int | None = typer.Option(
        None, min=1, help="Slurm: DDP ranks per run on CPUs (gloo), with --gpus-per-job 0 [default: one per GPU]."),
    cpus_per_job: int = typer.Option(8, min=1, help="Slurm: CPUs per run, shared by its ranks."),
    parallel: int | None = typer.Option(
        None, min=1, help="Slurm: at most this many runs at once [default: 64]. Local, without a GPU: this many runs "
        "at once, each a worker process with its share of the cores [default: one one-thread run per core]; 1: one "
        "at a time with every thread. A run keeps the thread count it started with when resumed."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and the hours to go on the device each "
                                 "estimate is for (a GPU's from a GPU bench, else this CPU's); run nothing."),
    list_: bool = typer.Option(False, "--list", help="List the experiments and exit."),
    force: bool = typer.Option(False, "--force", help="Replace a table or figure even when the one in OUT was "
                               "built from more runs [default: write the new one to OUT/partial/, keep the old]."),
) -> None:
    """Train every run a table or figure still lacks (on this CPU, local GPUs or Slurm), then render it.

    Finished runs are skipped and interrupted ones resumed, so a second sweep trains nothing. Under Slurm a run
    that is preempted or reaches its time limit checkpoints, is requeued and resumes; the sweep waits for it.
    """
    from resrepro.experiments import list_experiments, load_experiment

    if list_ or experiment is None:
        rows = []
        for name in list_experiments():
            e = load_experiment(name)
            rows.append({"experiment": name, "renders": ", ".join(e.renders), "title": e.title})
        print_records(rows, Format.table, title="resrepro sweep EXPERIMENT [--scale tiny|full]")
        return
    exp = load_experiment(experiment, scale, seeds)
    check_output(runs, folder=True, option="--runs")
    from resrepro.sweep import SlurmOptions, check_gpus, plan, results_dir, run_sweep  # torch: after the checks

    if dry_run:
        on_gpus = bool(_parse_gpus(gpus)) or (executor is not Executor.local and gpus_per_job > 0)
        from resrepro.sweep.jobs import cpu_slots, on_cores

        side_by_side = executor is Executor.local and on_cores(_parse_gpus(gpus), parallel)
        _print_plan(plan(exp, runs), runs / exp.runs_dir_rel, on_gpus, len(cpu_slots(parallel)) if side_by_side else 1)
        return
    gpu_ids = _parse_gpus(gpus)
    if gpu_ids and executor is Executor.local:
        check_gpus(gpu_ids)
    out = out or results_dir(exp)
    check_output(out, folder=True)
    slurm = SlurmOptions(partition, time_min, gpus_per_job, cpus_per_job,
                         parallel or SlurmOptions.array_parallelism, ranks_per_job=ranks_per_job)
    if executor is not Executor.local:
        slurm.check()
    err.print(f"[bold]{exp.title}[/] ({exp.scale}): {len(exp.runs)} runs under {runs / exp.runs_dir_rel}")
    result = run_sweep(exp, runs, executor=executor.value, gpus=gpu_ids, gpus_per_run=gpus_per_run,
                       parallel=parallel, slurm=slurm, out_dir=out, progress=True,
                       report=lambda m: err.print(escape(m), highlight=False), force=force)
    for w in result.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    for path in result.rendered:
        err.print(f"wrote {escape(str(path))}", highlight=False)
    say_claims(result.rendered)
    err.print(f"{len(result.skipped)} finished before, {len(result.trained)} trained, "
              f"{len(result.failed)} failed" + (f"; {len(result.evaluated)} evaluations written under RUN/eval/"
                                                if result.evaluated else ""))
    if result.failed:  # one line each, then a non-zero exit a script or a scheduler can see
        for message in result.failed.values():
            err.print(f"[bold red]failed:[/] {escape(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _parse_gpus(gpus: str | None) -> list[int] | None:
    if gpus is None:
        return None
    try:
        ids = [int(g) for g in gpus.split(",") if g.strip()]
    except ValueError:
        fail(f"--gpus takes GPU indices such as 0,1, got {gpus!r}")
    if not ids or len(set(ids)) != len(ids) or min(ids) < 0:
        fail(f"--gpus takes distinct GPU indices such as 0,1, got {gpus!r}")
    return ids


def _print_plan(items: list[PlanItem], runs_dir: Path, on_gpus: bool = False, side_by_side: int = 1) -> None:
    """The plan as a table, then the time to go on the device(s) the estimates are for; when the sweep would
    train on GPUs (--gpus, Slurm) but the estimates are a CPU's, says so and how to get a GPU's figure.
    ``side_by_side``: runs this CPU trains at once (a local sweep without GPUs): the wall time that gives too."""
    # A run of another group (a detector's ImageNet backbone) is named by its folder under the runs root.
    rows = [{"run": i.run.name if i.run_dir.parent == runs_dir else str(i.run.run_dir_rel), "status": i.status,
             "iters": i.run.spec.iters if i.run.spec else "—",
             "done": i.done_iters or "", "images/s": f"{i.images_per_s:,.0f}" if i.images_per_s else "—",
             "time to go": "—" if i.status in ("finished", "evaluate") else
             "unknown" if i.gpu_hours is None else _duration(i.gpu_hours),
             "estimate from": i.source.split(":", 1)[0]} for i in items]
    print_records(rows, Format.table, title=f"sweep plan: {runs_dir}")
    counts: dict[str, int] = {}
    for i in items:
        counts[i.status] = counts.get(i.status, 0) + 1
    left = [i for i in items if i.status in ("partial", "todo")]
    known = [i for i in left if i.gpu_hours is not None]
    sources: dict[str, int] = {}
    for i in known:
        sources[i.source] = sources.get(i.source, 0) + 1
    devices: dict[tuple[str, str], float] = {}
    for i in known:
        devices[(i.device, i.device_type)] = devices.get((i.device, i.device_type), 0.0) + i.gpu_hours
    unknown = len(left) - len(known)
    on = "; ".join(f"about {_duration(h)} {_on(d, t)}" for (d, t), h in devices.items())
    err.print(", ".join(f"{n} {s}" for s, n in counts.items()) + f"; {len(left)} to train"
              + (f", {on}" if known else "") + (f" plus {unknown} without an estimate" if unknown else ""),
              highlight=False, soft_wrap=True)
    if side_by_side > 1 and len(known) > 1:
        hours = [i.gpu_hours for i in known]
        # The runs' hours shared out over the slots, never less than the longest run, each run taken to last as
        # long side by side as its figure says.
        wall = max(sum(hours) / side_by_side, max(hours))
        err.print(f"  {side_by_side} at a time on this CPU (--parallel): about {_duration(wall)} of wall time, an "
                  "estimate that takes each run to last as long side by side as above (measured on 2 cores: "
                  "side by side 1.6-3.3x faster than one at a time)", highlight=False, soft_wrap=True)
    for source, n in sources.items():  # where each estimate came from, in full
        err.print(f"  {n} estimated from {escape(source)}", highlight=False, soft_wrap=True)
    if on_gpus and any(t != "cuda" for _, t in devices):
        err.print("[yellow]note:[/] this sweep trains on GPUs, but these are not GPU-hours: no GPU figure is at hand. "
                  "For one, run `resrepro bench --model resnet56` (and the nets you plan) on a GPU node and copy "
                  "its ~/.cache/resrepro/bench/*.json here into ~/.cache/resrepro/bench/ or results/bench/.",
                  highlight=False, soft_wrap=True)
    for i in items:
        if i.status == "conflict":
            err.print(f"[yellow]conflict:[/] {i.note}", highlight=False, soft_wrap=True)


def _on(device: str, device_type: str) -> str:
    """Which device a time is for: "GPU-hours on one NVIDIA H100", "on this CPU (x86_64 (2 threads))"."""
    if device_type == "cuda":
        return f"of one GPU ({escape(device)})"
    if device_type == "cpu":
        return f"on one CPU ({escape(device)}), not GPU-hours"
    return "on the machine that trained the runs it was measured on"


def _duration(hours: float) -> str:
    """Hours as a reader wants them: "40 s", "12 min", "3.4 h" (never "0.0" for a short run)."""
    seconds = hours * 3600
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{hours:.1f} h"
