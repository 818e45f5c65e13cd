"""The ImageNet recipe (§3.4): an ImageFolder decoded and cropped by loader workers (uint8), the paper's
augmentation finished on the device, 18-152-layer nets, center-crop validation sharded over the ranks of a
torchrun job (DDP, BN per GPU as in the paper: no SyncBN); its family entry (the test protocols of §3.4, each
result kept in RUN/eval/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from resrepro.data.imagenet import ToInput, check_num_classes, imagenet_sets, skip_none_collate
from resrepro.data.samplers import EpochLoader, leave_stops_to_the_main_process
from resrepro.errors import ResreproError
from resrepro.models.blocks import zero_init_residual
from resrepro.models.registry import resolve
from resrepro.train import imagenet_eval
from resrepro.train.groups import micro_batches, rank_positions
from resrepro.train.metrics import Tally
from resrepro.train.recipe import EvalOptions, Family, Recipe, endless
from resrepro.train.runtime import evaluating, use_channels_last
from resrepro.train.schedule import Schedule
from resrepro.train.spec import ImageNetSpec


class _Batches:
    """This rank's BN groups of each batch from iteration ``step`` on. The sampler is a function of (seed, epoch,
    rank's share), so the position is all a resume needs: the state is empty."""

    def __init__(self, spec: ImageNetSpec, train_set, step: int, steps_per_epoch: int, rank: int, world: int,
                 device: torch.device, to_input: ToInput) -> None:
        self.train_set, self.device, self.to_input = train_set, device, to_input

        take = rank_positions(spec.batch_size, spec.batch_size // spec.bn_group, rank, world)
        epoch = EpochLoader(train_set, spec.seed, spec.batch_size, take, num_workers=spec.workers,
                            collate_fn=skip_none_collate, pin_memory=device.type == "cuda",
                            generator=torch.Generator().manual_seed(spec.seed))
        self.stream = endless(epoch, step, steps_per_epoch)

    @property
    def skipped(self) -> int:
        return self.train_set.skipped

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = next(self.stream)
        if batch is None:
            raise ResreproError("every image of a training batch failed to decode; check DATA_DIR/train")
        (images, flips, offsets), labels = (_to(t, self.device) for t in batch)
        return self.to_input(images, flips, offsets), labels

    def state_dict(self) -> dict[str, Any]:
        return {}


def _to(batch: Any, device: torch.device) -> Any:
    """A collated batch (a tensor, or a tuple of them) copied to ``device`` without waiting (pinned on CUDA)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return tuple(t.to(device, non_blocking=True) for t in batch)


def _validate(model: nn.Module, loader: DataLoader, spec: ImageNetSpec, device: torch.device, channels_last: bool,
              to_input: ToInput) -> dict[str, Any]:
    """Center-crop val loss, top-1 and top-5 error of ``loader`` (a :func:`_val_loader`), as every evaluation runs
    (:func:`~resrepro.train.runtime.evaluating`): what `resrepro eval RUN --center` gives for these weights."""
    tally = Tally(device)
    with evaluating(model, spec.precision, device, channels_last) as forward:
        for b in loader:
            if b is not None:
                x, y = _to(b, device)
                tally.add_logits(forward(to_input(x)), y)
    if tally.all_reduce().images == 0:
        raise ResreproError("no val image could be decoded; check DATA_DIR/val")
    return tally.result()


def _val_loader(val_set, spec: ImageNetSpec, device: torch.device, rank: int, world: int, batch: int) -> DataLoader:
    """Each rank takes every world-th val image, no padding. Its workers are kept from one evaluation to the
    next (the center crop draws nothing at random: the same images either way)."""
    return DataLoader(Subset(val_set, range(rank, len(val_set), world)), batch_size=batch,
                      num_workers=spec.workers, persistent_workers=spec.workers > 0, collate_fn=skip_none_collate,
                      pin_memory=device.type == "cuda", worker_init_fn=leave_stops_to_the_main_process)


def _build(spec: ImageNetSpec, num_classes: int) -> nn.Module:
    model = resolve(spec.model).build(num_classes=num_classes, width=spec.width)
    if spec.zero_init_residual:
        zero_init_residual(model)
    return model


def imagenet_recipe(spec: ImageNetSpec, device: torch.device, channels_last: bool, rank: int = 0,
                    world: int = 1) -> Recipe:
    micro = micro_batches(spec.batch_size, spec.bn_group, world)
    per_rank = spec.batch_size // world
    train_set, val_set = imagenet_sets(spec.data_root(), scale=spec.scale, crop=spec.crop)
    to_input = ToInput(spec.normalize, device, channels_last)
    num_classes = spec.num_classes or len(train_set.classes)
    check_num_classes(num_classes, train_set.classes)
    steps_per_epoch = len(train_set) // spec.batch_size
    if steps_per_epoch < 1:
        raise ResreproError(f"{len(train_set)} training images do not fill one batch of {spec.batch_size}")

    def batches(step: int, state: dict[str, Any] | None) -> _Batches:
        return _Batches(spec, train_set, step, steps_per_epoch, rank, world, device, to_input)

    val_loader = _val_loader(val_set, spec, device, rank, world, per_rank)  # its workers start at the first use

    return Recipe(
        build_model=lambda: _build(spec, num_classes),
        batches=batches, schedule=Schedule(spec.lr, spec.milestones, spec.lr_decay),
        train_images=len(train_set), eval_split="val",
        evaluate=lambda model: _validate(model, val_loader, spec, device, channels_last, to_input),
        finish=lambda model: {"eval_protocol": "center"},
        model_info={"num_classes": num_classes, "in_channels": 3},
        summary=lambda skipped: {"skipped_images": {"train": skipped, "val": val_set.skipped}},
        out_of_memory=_out_of_memory(spec, micro), micro_batches=micro,
    )


def _out_of_memory(spec: ImageNetSpec, micro: int) -> str:
    """More GPUs, each taking fewer of the batch's BN groups; one group per GPU already: a smaller BN group."""
    gpus = "train on more GPUs (torchrun --nproc-per-node N), each taking fewer of the batch's BN groups"
    if micro > 1:
        return gpus
    return (f"{gpus}, or a smaller --bn-group than {spec.bn_group} (BN over fewer images: another net than the "
            "paper's)")


def _evaluate(spec: ImageNetSpec, model: nn.Module, ask: EvalOptions) -> dict[str, Any]:
    """Under ``ask.protocol`` (default "center") at the run's own sizes, on its val/ (``ask.data_dir``: where
    that ImageFolder is now)."""
    if ask.split is not None:
        raise ResreproError("--split is for CIFAR runs; ImageNet runs are evaluated on DIR/val")
    protocol = ask.protocol or "center"
    root = Path(ask.data_dir).expanduser() if ask.data_dir is not None else spec.data_root()
    sizes = tuple(ask.scales or spec.test_scales)
    result = imagenet_eval.evaluate(model, root / "val", protocol, device=ask.device, normalize=spec.normalize,
                                    max_images=ask.max_images, scales=sizes,
                                    workers=spec.workers if ask.workers is None else ask.workers,
                                    resize=spec.scale[0], crop=spec.crop, tally=ask.tally,
                                    precision=spec.precision,
                                    channels_last=use_channels_last(spec.channels_last, ask.device))
    return {"split": "val", **result, **({"scales": list(sizes)} if protocol == "multi-scale" else {})}


FAMILY = Family(
    name="imagenet", spec=ImageNetSpec, recipe=imagenet_recipe,
    build=lambda spec, state: resolve(spec.model).build(num_classes=int(state.get("num_classes", 10)),
                                                        width=spec.width),
    evaluate=_evaluate, protocols=imagenet_eval.PROTOCOLS, keeps_eval=True,
    eval_columns=(("top1", "top1_error"), ("top5", "top5_error")),
    image_size=lambda spec: spec.crop, bench="imagenet", fixed_shapes=True,
)
