"""The CIFAR-10 recipe (§4.2): the whole set resident on the device as uint8, augmented there, 6n+2-layer
nets, the warm-up of ResNet-110, and the final iterate's error on the whole training set in eval mode; its
family entry (the test or val split's error, nothing kept in RUN/eval/)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from resrepro.data.datasets import load_dataset
from resrepro.data.pipeline import BatchStream, ImageSet, eval_batches, normalizer
from resrepro.errors import ResreproError
from resrepro.models.registry import resolve
from resrepro.train.groups import micro_batches, rank_positions
from resrepro.train.metrics import Tally
from resrepro.train.recipe import EvalOptions, Family, Recipe
from resrepro.train.runtime import evaluating, use_channels_last
from resrepro.train.schedule import Schedule
from resrepro.train.spec import CifarSpec


def build_cifar_model(spec: CifarSpec, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    model = resolve(spec.model).build(width=spec.width, num_classes=num_classes, in_channels=in_channels,
                                      zero_pad=spec.zero_pad)
    model.grad_checkpoint = spec.grad_checkpoint
    return model


def evaluate_set(model: nn.Module, data: ImageSet, spec: CifarSpec, device: torch.device, mean: torch.Tensor,
                 std: torch.Tensor, channels_last: bool = False, tally: Tally | None = None) -> dict[str, Any]:
    """Loss and top-1 error over a whole split, unaugmented (the paper tests the original image), as every
    evaluation runs (:func:`~resrepro.train.runtime.evaluating`). ``tally``: one of the caller's (top-5, kept
    probabilities), else top-1 only."""
    tally = tally or Tally(device, top5=False)
    with evaluating(model, spec.precision, device, channels_last) as forward:
        for x, y in eval_batches(data, spec.eval_batch_size, device=device, mean=mean, std=std,
                                 channels_last=channels_last):
            tally.add_logits(forward(x), y)
    return tally.result()


def cifar_recipe(spec: CifarSpec, device: torch.device, channels_last: bool, rank: int = 0, world: int = 1) -> Recipe:
    per_rank = micro_batches(spec.batch_size, spec.bn_group, world)
    splits = load_dataset(spec.dataset, spec.data_dir, val_split=spec.val_split, verify=spec.verify)
    mean, std = normalizer(splits.train, spec.normalize)
    channels = splits.train.images.shape[1]
    schedule = Schedule(spec.lr, spec.milestones, spec.lr_decay, spec.uses_warmup, spec.warmup_lr,
                        spec.warmup_until_error)

    def batches(step: int, state: dict[str, Any] | None) -> BatchStream:
        stream = BatchStream(splits.train, spec.batch_size, device=device, seed=spec.seed, augment=spec.augment,
                             pad=spec.pad, mean=mean, std=std, channels_last=channels_last,
                             take=rank_positions(spec.batch_size, spec.batch_size // spec.bn_group, rank, world))
        if state is not None:
            stream.load_state_dict(state)
        return stream

    def evaluate(model: nn.Module) -> dict[str, Any]:
        return evaluate_set(model, splits.eval, spec, device, mean, std, channels_last)

    def finish(model: nn.Module) -> dict[str, Any]:
        result = evaluate_set(model, splits.train, spec, device, mean, std, channels_last)
        return {"train_eval_error": result["top1_error"], "train_eval_loss": result["loss"]}

    return Recipe(
        build_model=lambda: build_cifar_model(spec, splits.train.num_classes, channels),
        batches=batches, schedule=schedule, train_images=len(splits.train), eval_split=splits.eval_split,
        evaluate=evaluate, finish=finish,
        model_info={"num_classes": splits.train.num_classes, "in_channels": channels},
        summary=lambda skipped: {"warmup_released_at": schedule.released_at}, micro_batches=per_rank,
        out_of_memory=("use a GPU with more memory or a smaller --batch-size" + (
                           ", or train on more GPUs (--ranks N), each taking fewer of the batch's BN groups"
                           if per_rank > 1 else "") if spec.grad_checkpoint
                       else "use --grad-checkpoint: it recomputes each stage's activations in the backward pass "
                       "instead of keeping them (less memory, more time)"),
    )


def _evaluate(spec: CifarSpec, model: nn.Module, ask: EvalOptions) -> dict[str, Any]:
    """The final weights' error and loss on ``ask.split`` ("test", "val", None for the run's own)."""
    if ask.protocol not in (None, "center") or ask.max_images or ask.scales:
        raise ResreproError(f"{ask.path} is a CIFAR run: --ten-crop/--multi-scale/--max-images are for ImageNet")
    if ask.split == "val" and spec.val_split == 0:
        raise ResreproError(f"{spec.model} was trained on the whole training set: it has no val split; "
                            "use --split test")
    val_split = spec.val_split if ask.split in (None, "val") else 0
    splits = load_dataset(spec.dataset, ask.data_dir or spec.data_dir, val_split=val_split, verify=spec.verify)
    mean, std = normalizer(splits.train, spec.normalize)
    result = evaluate_set(model, splits.eval, spec.replace(device=str(ask.device)), ask.device, mean, std,
                          use_channels_last(spec.channels_last, ask.device), ask.tally)
    return {"split": splits.eval_split, **result}


def _image_size(spec: CifarSpec) -> int:
    return 16 if spec.dataset == "digits" else 32  # the tiny scale's digits are 16x16


FAMILY = Family(
    name="cifar", spec=CifarSpec, recipe=cifar_recipe,
    build=lambda spec, state: build_cifar_model(spec, int(state.get("num_classes", 10)),
                                                int(state.get("in_channels", 3))),
    evaluate=_evaluate, protocols=("center",), image_size=_image_size, bench="cifar",
    fixed_shapes=True, channels_last_on_cpu=True,
)
