"""`resrepro train cifar|imagenet` (detection: cli/detection.py)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from resrepro.cli.common import app, check_output, choices, err, fail
from resrepro.models.registry import IMAGENET_DEPTHS
from resrepro.train.spec import (
    CIFAR_BN_GROUP,
    IMAGENET_BN_GROUP,
    CifarDataset,
    CifarSpec,
    ImageNetSpec,
    Normalize,
    Precision,
    ZeroPad,
)

train_app = typer.Typer(help="Train one network with the paper's recipe.", no_args_is_help=True)
app.add_typer(train_app, name="train")


class Shortcut(str, Enum):
    A = "A"
    B = "B"
    C = "C"


# The choices are the specs' own Literal types: declared once, there.
DatasetChoice = choices("DatasetChoice", CifarDataset)
NormalizeChoice = choices("NormalizeChoice", Normalize)
PrecisionChoice = choices("PrecisionChoice", Precision)
ZeroPadChoice = choices("ZeroPadChoice", ZeroPad)
CHANNELS_LAST_HELP = ("NHWC memory layout (default: on for CUDA; on a CPU, on for the CIFAR nets, which `resrepro "
                      "bench` measured faster there, off for ImageNet and detection, where torch 2.14.1's NHWC "
                      "backward of the ImageNet stem aborts). Same numbers up to float rounding; a resumed run keeps "
                      "the layout it started in unless this option says otherwise.")
TENSORBOARD_HELP = "Also log to RUN/tensorboard (needs the extra: pip install 'resrepro[tensorboard]')."
RANKS_HELP = ("Train as this many processes on this machine (DDP; rank r on cuda:r, gloo on a CPU), each taking its "
              "BN groups of every batch: the same net as one process. torchrun and Slurm start ranks themselves.")


def bn_group_help(default: int, paper: str) -> str:
    return (f"Images per BN group (default: {default}, or the whole batch if smaller; {paper}). Kept whatever the "
            "number of GPUs: each takes whole groups of the batch, and one GPU computes its groups one after the "
            "other (gradients accumulated), so the run is the same net on 1 GPU or many.")


def _recipe_of(dataset: str, asked: dict) -> tuple[dict, str]:
    """The length, batch, width, schedule and augmentation of a run: what was asked, else the tiny scale's for
    the digits (CIFAR-10's recipe on 16-px digits augments them away and logs one evaluation in a short run), else
    the paper's; and the settings taken from the tiny scale, said as "width 8, 600 iterations, ..."."""
    from resrepro.experiments import group_settings

    paper = {k: getattr(CifarSpec, k) for k in asked}
    tiny = group_settings("cifar10", "tiny") if dataset == "digits" else {}
    recipe = {k: v if v is not None else tiny.get(k, paper[k]) for k, v in asked.items()}
    recipe["milestones"] = tuple(recipe["milestones"])
    words = {"width": "width {}", "batch_size": "batch {}", "iters": "{} iterations",
             "milestones": "lr drops at {}", "eval_every": "evaluation every {}", "augment": "augmentation {}"}
    taken = [words[k].format(",".join(map(str, v)) if k == "milestones" else ("on" if v else "off")
                             if k == "augment" else v)
             for k, v in recipe.items() if asked[k] is None and k in tiny and tiny[k] != paper[k]]
    return recipe, ", ".join(taken) + ("; pass any of them to change it" if taken else "")


def _milestones(text: str) -> tuple[int, ...]:
    from resrepro.errors import ResreproError

    try:
        return tuple(int(m) for m in text.split(",") if m.strip())
    except ValueError:
        raise ResreproError(f"--milestones takes comma-separated iterations, e.g. 32000,48000; got {text!r}") from None


@train_app.command("cifar")
def train_cifar(
    n: int = typer.Option(3, "--n", help="Blocks per stage: depth 6n+2 (3→20, 5→32, 7→44, 9→56, 18→110, 200→1202)."),
    plain: bool = typer.Option(False, "--plain", help="The plain counterpart: same layers, no shortcuts."),
    shortcut: Shortcut = typer.Option(Shortcut.A, help="Shortcut option: A zero-pad identity (paper's CIFAR choice), "
                                      "B projection where dimensions grow, C projection everywhere."),
    zero_pad: ZeroPadChoice = typer.Option(CifarSpec.zero_pad, help="Option A: where the extra zero channels go. "
                                           "append: after the input's channels (the paper's reading); split: half "
                                           "before and half after, as the akamaster CIFAR ResNets do."),
    seed: int = typer.Option(0, help="Seed of initialisation, data order and augmentation."),
    out: Path | None = typer.Option(None, help="Run directory (default: runs/<model>-s<seed>). If it holds this "
                                    "run, training resumes from its checkpoint."),
    dataset: DatasetChoice = typer.Option(CifarSpec.dataset, help="cifar10 (the paper's), digits (real 16×16 images, "
                                    "offline; the tiny scale) or synthetic (smoke tests)."),
    data_dir: Path | None = typer.Option(
        None, help="Folder holding cifar-10-batches-py/ (default: ~/.cache/resrepro/data)."),
    download: bool = typer.Option(False, "--download",
                                  help="Download CIFAR-10 into --data-dir first (needs the network)."),
    skip_checksum: bool = typer.Option(False, "--skip-checksum",
                                       help="Do not verify the CIFAR-10 files' MD5 sums (for a modified copy)."),
    iters: int | None = typer.Option(None, help=f"Training iterations (paper: 64k) [default: {CifarSpec.iters}; "
                                     "digits: the tiny scale's 600]."),
    batch_size: int | None = typer.Option(None, help=f"Mini-batch size (paper: 128) [default: {CifarSpec.batch_size}; "
                                          "digits: 64]."),
    bn_group: int | None = typer.Option(None, "--bn-group", help=bn_group_help(
        CIFAR_BN_GROUP, "paper: 128 on two GPUs. --bn-group 128: one group of the whole batch, a deviation")),
    lr: float = typer.Option(CifarSpec.lr, help="Base learning rate (paper: 0.1)."),
    milestones: str | None = typer.Option(
        None, help="Iterations at which lr is divided by 10 (paper: 32k, 48k) "
        f"[default: {','.join(map(str, CifarSpec.milestones))}; digits: 300,450]."),
    momentum: float = typer.Option(CifarSpec.momentum, help="SGD momentum (paper: 0.9)."),
    weight_decay: float = typer.Option(CifarSpec.weight_decay, help="Weight decay (paper: 1e-4)."),
    warmup: bool | None = typer.Option(None, "--warmup/--no-warmup", help="Hold lr at 0.01 until training error "
                                       "< 80%, then use --lr (paper: ResNet-110) (default: on for n >= 18)."),
    normalize: NormalizeChoice = typer.Option(CifarSpec.normalize, help="pixel-mean (paper) or mean-std (peer "
                                              "style)."),
    augment: bool | None = typer.Option(None, "--augment/--no-augment", help="Pad-4 random crop and horizontal flip "
                                        "(paper) [default: on; digits: off, a 4-px shift moves a quarter of a 16-px "
                                        "digit and a flip makes another digit]."),
    val_split: int = typer.Option(CifarSpec.val_split, help="Hold out this many training images and report error "
                                  "on them instead of the test set (paper: 5000, to choose the schedule)."),
    width: int | None = typer.Option(None, help=f"First-stage filters (paper: 16) [default: {CifarSpec.width}; "
                                     "digits: 8]."),
    eval_every: int | None = typer.Option(None, help="Evaluate, log and checkpoint every this many iterations "
                                          f"[default: {CifarSpec.eval_every}; digits: 50]."),
    precision: PrecisionChoice = typer.Option(CifarSpec.precision, help="auto: bf16 autocast on CUDA, fp32 on CPU; "
                                          "every evaluation of the run uses it too."),
    compile: bool | None = typer.Option(None, "--compile/--no-compile", help="torch.compile (default: on for CUDA); "
                                                "block by block for a net over 100 blocks or with --grad-checkpoint."),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last", help=CHANNELS_LAST_HELP),
    device: str = typer.Option(CifarSpec.device, help="auto, cpu, cuda, cuda:1, ..."),
    grad_checkpoint: bool = typer.Option(False, "--grad-checkpoint", help="Recompute activations per stage in "
                                         "backward (ResNet-1202 on small GPUs): same result, less memory, more time."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help=TENSORBOARD_HELP),
    ranks: int = typer.Option(1, "--ranks", min=1, help=RANKS_HELP),
) -> None:
    """Train one CIFAR-10 net (6n+2 layers) with the paper's recipe (§4.2).

    Rerun the same command to resume from its last checkpoint. On a CPU an interrupted run ends with the same
    numbers, bit for bit, on the same machine; on a GPU, cuDNN and atomic-add kernels are not deterministic,
    so a resumed run (as any rerun) may differ in the last bits, and training being chaotic, more.

    A finished run is not retrained; a directory holding a run with other settings is refused, never overwritten.
    """
    import json

    from resrepro.models.registry import cifar_spec

    model = cifar_spec(n, plain=plain, shortcut=shortcut.value).name
    asked = {"iters": iters, "batch_size": batch_size, "width": width, "eval_every": eval_every, "augment": augment,
             "milestones": None if milestones is None else _milestones(milestones)}
    recipe, taken = _recipe_of(dataset.value, asked)
    spec = CifarSpec(
        model=model, dataset=dataset.value, seed=seed, bn_group=bn_group, lr=lr, momentum=momentum,
        weight_decay=weight_decay, warmup=warmup, normalize=normalize.value, val_split=val_split, **recipe,
        checkpoint_every=recipe["eval_every"], precision=precision.value, grad_checkpoint=grad_checkpoint,
        data_dir=str(data_dir) if data_dir else None, device=device, compile=compile, channels_last=channels_last,
        tensorboard=tensorboard, verify=not skip_checksum, zero_pad=zero_pad.value,
    )
    out = out or Path("runs") / f"{model}-s{seed}"
    check_output(out, folder=True)
    if download:  # only now torch (seconds to import): a mistyped argument above was answered at once
        from resrepro.data.datasets import load_dataset

        load_dataset("cifar10", data_dir, download=True, verify=not skip_checksum)
    if taken:
        err.print(f"{spec.dataset}: the tiny scale's recipe (the cifar10 group's \\[scale.tiny]) where you set "
                  f"nothing: {taken}", highlight=False, soft_wrap=True)
    layout = ", option A zeros split" if spec.zero_pad == "split" else ""
    summary = train_on_ranks(spec, out, device, f"[bold]{model}[/] ({spec.dataset}, {spec.iters:,} iterations, "
                             f"warm-up {'on' if spec.uses_warmup else 'off'}{layout}, BN over {spec.bn_group} "
                             "images", ranks)
    if summary is None:
        return
    final = summary["final"]
    # The whole training set in eval mode, as the paper's curves and claims mean it; the running error over the
    # last mini-batches (train mode, mid-update) reads much higher on a short run.
    train_error = final.get("train_eval_error", final["train_error"])
    which = "training error (eval mode)" if "train_eval_error" in final else "training error"
    err.print(f"done: {which} {100 * train_error:.2f}%, {final['eval_split']} error "
              f"{100 * final['eval_error']:.2f}% after {summary['iter']:,} iterations")
    typer.echo(json.dumps({"run_dir": str(out), **final}))


@train_app.command("imagenet")
def train_imagenet(
    depth: int = typer.Option(34, metavar="|".join(map(str, IMAGENET_DEPTHS)),
                              help="18, 34 (basic blocks), 50, 101, 152 (bottlenecks) (Table 1)."),
    plain: bool = typer.Option(False, "--plain", help="The plain counterpart (18 and 34 layers in the paper)."),
    shortcut: Shortcut = typer.Option(Shortcut.B, help="A zero-pad identity (Table 2), B projection where "
                                      "dimensions grow (paper's choice for 50+), C projection everywhere."),
    stride_in_3x3: bool = typer.Option(False, "--stride-in-3x3", help="Bottleneck stride on the 3×3 "
                                       "(torchvision's v1.5); the paper strides the first 1×1."),
    data_dir: Path | None = typer.Option(None, help="ImageNet as DIR/train/<wnid>/ and DIR/val/<wnid>/ "
                                         "(default: ~/.cache/resrepro/data/imagenet)."),
    seed: int = typer.Option(0, help="Seed of initialisation, data order and augmentation."),
    out: Path | None = typer.Option(None, help="Run directory (default: runs/<model>-s<seed>)."),
    iters: int = typer.Option(ImageNetSpec.iters, help="Training iterations (paper: 600k)."),
    batch_size: int = typer.Option(ImageNetSpec.batch_size, help="Global mini-batch over all processes (paper: "
                                   "256)."),
    lr: float = typer.Option(ImageNetSpec.lr, help="Base learning rate (paper: 0.1)."),
    milestones: str = typer.Option(",".join(map(str, ImageNetSpec.milestones)), help="Iterations at which lr is "
                                   "divided by 10. Deviation: the paper divides 'when the error plateaus'; these "
                                   "are ~30/60/90 epochs."),
    momentum: float = typer.Option(ImageNetSpec.momentum, help="SGD momentum (paper: 0.9)."),
    weight_decay: float = typer.Option(ImageNetSpec.weight_decay, help="Weight decay (paper: 1e-4)."),
    normalize: NormalizeChoice = typer.Option(ImageNetSpec.normalize, help="pixel-mean (paper) or mean-std."),
    num_classes: int | None = typer.Option(None, help="Model outputs (default: one per class folder)."),
    width: int = typer.Option(ImageNetSpec.width, help="conv1/conv2_x filters (paper: 64); smaller for tiny runs."),
    zero_init_residual: bool = typer.Option(False, "--zero-init-residual", help="Deviation: BN γ = 0 at the end of "
                                            "each residual branch, so blocks start as their shortcut (Goyal et al. "
                                            "2017); the tiny scale's, which trains its bottleneck nets in 1,200 "
                                            "iterations. Paper: γ = 1."),
    bn_group: int | None = typer.Option(None, "--bn-group", help=bn_group_help(
        IMAGENET_BN_GROUP, "the reference implementations' 8 GPUs at batch 256; the paper names no GPU count")),
    eval_every: int = typer.Option(ImageNetSpec.eval_every, help="Center-crop validation and checkpoint every this "
                                   "many iterations."),
    workers: int = typer.Option(ImageNetSpec.workers, help="Data-loading processes per GPU."),
    precision: PrecisionChoice = typer.Option(ImageNetSpec.precision, help="auto: bf16 autocast on CUDA, fp32 on "
                                              "CPU; every evaluation of the run uses it too."),
    compile: bool | None = typer.Option(None, "--compile/--no-compile", help="torch.compile (default: on for CUDA); "
                                                "block by block for a net over 100 blocks or with --grad-checkpoint."),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last", help=CHANNELS_LAST_HELP),
    device: str = typer.Option(ImageNetSpec.device, help="auto, cpu, cuda, ... (under torchrun: each process's own "
                               "GPU)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help=TENSORBOARD_HELP),
    ranks: int = typer.Option(1, "--ranks", min=1, help=RANKS_HELP),
) -> None:
    """Train one ImageNet net (18-152 layers) with the paper's recipe (§3.4); rerun to resume.

    Several GPUs: --ranks 8, or torchrun --nproc-per-node 8 -m resrepro train imagenet ... (DDP). BN stays over
    --bn-group images whatever the number: no SyncBN, as in the paper.
    """
    import json

    from resrepro.models.registry import model_name

    model = model_name("imagenet", depth, plain, None if plain else shortcut.value, not stride_in_3x3)
    spec = ImageNetSpec(
        model=model, seed=seed, iters=iters, batch_size=batch_size, lr=lr, momentum=momentum,
        weight_decay=weight_decay, milestones=_milestones(milestones), normalize=normalize.value,
        num_classes=num_classes, width=width, zero_init_residual=zero_init_residual, bn_group=bn_group,
        eval_every=eval_every, checkpoint_every=eval_every, workers=workers, precision=precision.value, compile=compile,
        channels_last=channels_last, device=device, tensorboard=tensorboard,
        data_dir=str(data_dir) if data_dir else None,
    )
    out = out or Path("runs") / f"{model}-s{seed}"
    summary = train_on_ranks(spec, out, device, f"[bold]{model}[/] (ImageNet, {spec.iters:,} iterations, batch "
                             f"{spec.batch_size}, BN over {spec.bn_group} images", ranks)
    if summary is not None:
        final = summary["final"]
        err.print(f"done: train error {100 * final['train_error']:.2f}%, val error (center crop) "
                  f"{100 * final['eval_error']:.2f}% after {summary['iter']:,} iterations")
        typer.echo(json.dumps({"run_dir": str(out), **final}))


def train_on_ranks(spec, out: Path, device: str, announce: str, ranks: int = 1) -> dict | None:
    """Train ``spec`` into ``out`` as this process's share of a torchrun job (alone when WORLD_SIZE is unset), or
    as ``ranks`` processes started here; rank 0 announces the run and returns its summary, the other ranks None."""
    import os

    check_output(out, folder=True)
    from resrepro.train.loop import init_distributed, train  # torch, once the arguments are known to be good
    from resrepro.train.runtime import resolve_device

    # torchrun's documented interface: WORLD_SIZE, RANK, LOCAL_RANK in each process's environment.
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if ranks > 1:
        from resrepro.train.launch import train_ranks

        if world > 1:
            fail(f"--ranks {ranks} starts its own processes: not under torchrun, which started {world}")
        resolve_device(spec.device)
        err.print(f"{announce} over {ranks} processes) → {out}")
        return train_ranks(spec, out, ranks, progress=True)
    if world > 1:
        spec = spec.replace(device=init_distributed(int(os.environ.get("LOCAL_RANK", "0")), device))
    else:
        resolve_device(spec.device)  # a device that is not here is one line, before anything is printed
    if rank == 0:
        err.print(f"{announce} over {world} process{'es' if world > 1 else ''}) → {out}")
    try:
        summary = train(spec, out, progress=rank == 0)
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    return summary if rank == 0 else None
