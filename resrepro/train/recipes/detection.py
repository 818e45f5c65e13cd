"""The detection recipe (appendix A): Faster R-CNN fine-tuned from an ImageNet backbone, mini-batches of whole
images with their boxes and the paper's horizontal flip, and the test split's mAP as the evaluation; its family
entry (VOC and COCO protocols, each result kept in RUN/eval/; the backbone run trained first)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from resrepro.data.samplers import EpochLoader, leave_stops_to_the_main_process
from resrepro.errors import ResreproError
from resrepro.models.registry import canonical_model
from resrepro.train.groups import rank_positions
from resrepro.train.recipe import EvalOptions, Family, Recipe, endless
from resrepro.train.runtime import evaluating
from resrepro.train.schedule import Schedule
from resrepro.train.spec import DetectionSpec, ImageNetSpec

# The benchmark each dataset's test split is scored by: VOC07 test by the VOC2007 devkit (11-point AP), VOC12
# test by VOC2012's (area under the curve), COCO val by COCO's own mAP@[.5:.95].
PROTOCOLS = {"voc07+12": "voc07", "voc07++12": "voc12", "coco": "coco", "digits-voc": "voc07",
             "digits-coco": "coco"}
EVAL_IMAGES = 8  # test images per forward pass


def build_detection_model(spec: DetectionSpec, num_classes: int,
                          classifier_state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    from resrepro.models.detection import build_detector

    return build_detector(spec.model, num_classes, width=spec.width, min_size=spec.min_size,
                          max_size=spec.max_size, anchor_sizes=spec.anchor_sizes,
                          proposals_test=spec.proposals_test, rois_per_image=spec.rois_per_image,
                          normalize=spec.normalize, classifier_state=classifier_state,
                          # From scratch, BN has no statistics to freeze: frozen at initialisation it is the identity,
                          # and a deep ResNet without normalisation diverges. It learns instead (a named deviation).
                          freeze_bn=not spec.from_scratch)


def pin_backbone(spec: DetectionSpec) -> DetectionSpec:
    """The spec with ``backbone_hash`` naming its backbone's weights (the ImageNet run's config hash, or the
    weights file's SHA-256) and ``normalize`` their pre-training normalisation (torchvision's: mean-std).
    Refuses a backbone run that is not a finished ImageNet run of the same net."""
    if spec.backbone_run is not None:
        saved = _backbone_run(spec)[0]
        return spec.replace(backbone_hash=saved.config_hash(), normalize=saved.normalize)
    if spec.weights is not None:
        return spec.replace(backbone_hash=_file_hash(spec.weights), normalize="mean-std")
    return spec


def _backbone_run(spec: DetectionSpec) -> tuple[ImageNetSpec, Path]:
    from resrepro.train.rundir import CONFIG, RunDir

    run = RunDir(Path(spec.backbone_run).expanduser())
    if not (run.path / CONFIG).is_file():
        raise ResreproError(f"--backbone-run {run.path}: no resrepro run there (no {CONFIG}); name the directory "
                            "of a finished `resrepro train imagenet` run")
    saved = run.read_spec()
    if not isinstance(saved, ImageNetSpec):
        raise ResreproError(f"--backbone-run {run.path} is a {saved.family} run ({saved.model}); a detection "
                            "backbone comes from an ImageNet run (`resrepro train imagenet`)")
    if canonical_model(saved.model) != canonical_model(spec.model) or saved.width != spec.width:
        raise ResreproError(f"--backbone-run {run.path} trained {saved.model} at width {saved.width}, not the "
                            f"backbone {spec.model} at width {spec.width}")
    if not run.is_finished():
        raise ResreproError(f"--backbone-run {run.path} has not finished training: finish it first (rerun its "
                            "`resrepro train imagenet` command)")
    return saved, run.path


def _file_hash(path: str) -> str:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ResreproError(f"--weights {file}: no such file (nothing is downloaded: give a local weights file)")
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def _classifier_state(spec: DetectionSpec) -> dict[str, torch.Tensor] | None:
    """The ImageNet classifier's weights the backbone starts from, checked against the pinned identity."""
    if spec.from_scratch:
        return None
    if spec.backbone_run is not None:
        from resrepro.train.checkpoint import clean_state_dict, load_checkpoint

        saved, path = _backbone_run(spec)
        found = saved.config_hash()
        state = clean_state_dict(load_checkpoint(path)["model"])
    else:
        from resrepro.train.imports import classifier_state_from_file, parse_import, torchvision_name

        library, arch = parse_import(spec.backbone_import)
        expected = torchvision_name(spec.model)
        if (library, arch) != ("torchvision", expected):
            raise ResreproError(f"--backbone-import {spec.backbone_import} does not hold the backbone {spec.model}: "
                                f"its weights are torchvision:{expected}'s")
        found = _file_hash(spec.weights)
        state = classifier_state_from_file(spec.weights, spec.model)  # refuses a file that does not fit
    if spec.backbone_hash is None:  # the identity is part of the run's configuration: it is fixed before training
        raise ResreproError("the backbone source has no backbone_hash: start the run with `resrepro train detection` "
                            "or a sweep, which pin it")
    if found != spec.backbone_hash:
        raise ResreproError(f"the backbone weights at {spec.backbone_run or spec.weights} are not the ones this run "
                            f"started from (identity {found}, the run's {spec.backbone_hash}): point at the original")
    return state


class _Flipped(Dataset):
    """A training image as floats in 0..1, flipped horizontally with probability 1/2 (the paper's only
    augmentation) from the generator ``SeededDataset`` seeded for this sample. Difficult objects are left out of
    training, as Faster R-CNN's VOC reader does."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        from resrepro.data.detection import hflip

        image, target = self.base[index]
        if image is None:
            return None
        if torch.rand(()) < 0.5:
            image, target = hflip(image, target)
        keep = ~target["difficult"]
        return image.float() / 255, {"boxes": target["boxes"][keep], "labels": target["labels"][keep]}


def _collate(batch: list[Any]) -> list[Any]:
    return [b for b in batch if b is not None]  # an unreadable image is skipped (the dataset counts it)


class _Batches:
    """This rank's images and targets from iteration ``step`` on; the position is the whole state (the order and
    the flips are functions of seed, epoch and index), so a resume replays nothing. A mini-batch whose every image
    failed to decode (one image per batch on VOC) is replaced by the next one: ``extra`` counts those drawn, so
    that a resume starts where this stream stands."""

    def __init__(self, spec: DetectionSpec, train_set, step: int, steps_per_epoch: int, rank: int, world: int,
                 device: torch.device, state: dict[str, Any] | None = None) -> None:
        self.train_set, self.device, self.steps_per_epoch = train_set, device, steps_per_epoch
        self.extra = int((state or {}).get("extra", 0))
        step += self.extra

        # Each rank its every world-th image of the batch (BN is frozen: no BN groups to keep).
        epoch = EpochLoader(_Flipped(train_set), spec.seed, spec.batch_size,
                            rank_positions(spec.batch_size, world, rank, world), num_workers=spec.workers,
                            collate_fn=_collate)
        self.stream = endless(epoch, step, steps_per_epoch)

    @property
    def skipped(self) -> int:
        return self.train_set.skipped

    def __next__(self) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        batch = next(self.stream)
        for _ in range(self.steps_per_epoch):  # skipped and counted; an epoch of them means nothing decodes
            if batch:
                break
            self.extra += 1
            batch = next(self.stream)
        if not batch:
            raise ResreproError(f"every image of {self.steps_per_epoch + 1} training mini-batches in a row failed to "
                                "decode; check the dataset's images")
        return ([image.to(self.device, non_blocking=True) for image, _ in batch],
                [{k: v.to(self.device, non_blocking=True) for k, v in target.items()} for _, target in batch])

    def state_dict(self) -> dict[str, Any]:
        return {"extra": self.extra}


def detection_loss(model: nn.Module, images: list[torch.Tensor],
                   targets: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The multi-task loss: the sum of torchvision's RPN and Fast R-CNN losses (classification and box
    regression of each). No misses: a detector has no top-1 error."""
    losses = model(images, targets)
    total = sum(losses.values())
    return total, total.new_zeros(())


class _Indexed(Dataset):
    """``(index, uint8 image or None)`` of a test set, for a loader's workers to decode."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None]:
        return index, self.base[index][0]


def eval_loader(dataset, workers: int, rank: int = 0, world: int = 1) -> DataLoader:
    """This rank's share of the test images (every world-th), decoded by ``workers`` processes, kept from one
    evaluation to the next; batches are lists of ``(index, image)``."""
    return DataLoader(Subset(_Indexed(dataset), range(rank, len(dataset), world)), batch_size=EVAL_IMAGES,
                      num_workers=workers, persistent_workers=workers > 0, collate_fn=list,
                      worker_init_fn=leave_stops_to_the_main_process)


def detect(model: nn.Module, loader: DataLoader, device: torch.device, precision: str = "fp32",
           ) -> dict[int, dict[str, torch.Tensor]]:
    """The detections of the images ``loader`` (an :func:`eval_loader`) serves, by index (in the image's pixels,
    on the CPU), as every evaluation runs (:func:`~resrepro.train.runtime.evaluating`: the run's precision; boxes
    stay fp32 under bf16); an unreadable image has none."""
    found: dict[int, dict[str, torch.Tensor]] = {}
    with evaluating(model, precision, device, channels_last=False) as forward:
        for items in loader:
            readable = [(i, image) for i, image in items if image is not None]
            if not readable:
                continue
            out = forward([image.to(device).float() / 255 for _, image in readable])
            for (i, _), d in zip(readable, out, strict=True):
                found[i] = {k: d[k].detach().float().cpu() if k != "labels" else d[k].cpu()
                            for k in ("boxes", "scores", "labels")}
    return found


def score(found: dict[int, dict[str, torch.Tensor]], dataset, protocol: str) -> dict[str, Any]:
    """``{"map", "ap": {class: AP}}`` (COCO: also ``map50``) by the protocol's reference definition, of the
    detections by image index (an image without any has none)."""
    from resrepro.train.detection_metrics import coco_evaluate, voc_evaluate

    none = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    detections = [found.get(i, none) for i in range(len(dataset))]
    if protocol == "coco":
        return coco_evaluate(detections, dataset)
    return voc_evaluate(detections, dataset, use_07_metric=protocol == "voc07")


def score_on_rank_0(found: dict[int, dict[str, torch.Tensor]], dataset, protocol: str, world: int,
                    ) -> dict[str, Any]:
    """:func:`score` of every rank's detections, computed once, on rank 0 (the others send theirs and wait), and
    the result handed to every rank."""
    if world == 1:
        return score(found, dataset, protocol)
    rank = dist.get_rank()
    shares: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(found, shares, dst=0)
    result = [score({i: d for share in shares for i, d in share.items()}, dataset, protocol) if rank == 0 else None]
    dist.broadcast_object_list(result, src=0)
    return result[0]


def detection_recipe(spec: DetectionSpec, device: torch.device, channels_last: bool = False, rank: int = 0,
                     world: int = 1) -> Recipe:
    from resrepro.data.detection import load_detection

    if spec.batch_size % world:
        raise ResreproError(f"--batch-size {spec.batch_size} must divide into {world} processes")
    data_dir = Path(spec.data_dir).expanduser() if spec.data_dir else None
    train_set = load_detection(spec.dataset, "train", data_dir)
    test_set = load_detection(spec.dataset, "test", data_dir)
    steps_per_epoch = len(train_set) // spec.batch_size
    if steps_per_epoch < 1:
        raise ResreproError(f"{len(train_set)} training images do not fill one mini-batch of {spec.batch_size}")
    protocol = PROTOCOLS[spec.dataset]

    def batches(step: int, state: dict[str, Any] | None) -> _Batches:
        return _Batches(spec, train_set, step, steps_per_epoch, rank, world, device, state)

    loader = eval_loader(test_set, spec.workers, rank, world)  # its workers start at the first evaluation

    def evaluate(model: nn.Module) -> dict[str, Any]:
        result = score_on_rank_0(detect(model, loader, device, spec.precision), test_set, protocol, world)
        return {"loss": None, "error": 1 - result["map"], "map": result["map"]}

    return Recipe(
        build_model=lambda: build_detection_model(spec, len(train_set.classes), _classifier_state(spec)),
        batches=batches, schedule=Schedule(spec.lr, spec.milestones, spec.lr_decay),
        train_images=len(train_set), eval_split="test", evaluate=evaluate,
        finish=lambda model: {"eval_protocol": protocol},
        model_info={"num_classes": len(train_set.classes), "in_channels": 3},
        summary=lambda skipped: {"skipped_images": {"train": skipped, "test": test_set.skipped}},
        loss=detection_loss, counts_errors=False,
        # Each rank samples its RoIs from its own random stream and averages the loss over its own images: on
        # another number of processes, another computation.
        same_across_worlds=False,
    )


def _evaluate(spec: DetectionSpec, model: nn.Module, ask: EvalOptions) -> dict[str, Any]:
    """The test split's mAP under ``ask.protocol`` (default: the dataset's benchmark)."""
    import math

    from resrepro.data.detection import load_detection

    if ask.split is not None or ask.max_images or ask.scales:
        raise ResreproError(f"{ask.path} is a detection run: it is evaluated on its test split with --protocol "
                            f"{'|'.join(FAMILY.protocols)}")
    protocol = ask.protocol or PROTOCOLS[spec.dataset]
    root = ask.data_dir or spec.data_dir
    test_set = load_detection(spec.dataset, "test", Path(root).expanduser() if root else None)
    loader = eval_loader(test_set, spec.workers if ask.workers is None else ask.workers)
    result = score(detect(model, loader, ask.device, spec.precision), test_set, protocol)
    # A class without ground truth has AP NaN, which JSON cannot hold: null.
    result |= {k: {c: None if math.isnan(v) else v for c, v in result[k].items()}
               for k in ("ap", "ap50") if k in result}
    return {"split": "test", "protocol": protocol, **result, "images": len(test_set),
            "skipped_images": test_set.skipped}


FAMILY = Family(
    name="detection", spec=DetectionSpec, recipe=detection_recipe,
    # The backbone's ImageNet weights are in the checkpoint already: nothing to fetch.
    build=lambda spec, state: build_detection_model(spec, int(state.get("num_classes", 10))),
    evaluate=_evaluate, protocols=("voc07", "voc12", "coco"), keeps_eval=True,
    eval_columns=(("map", "map"), ("map50", "map50")), upstream="backbone_run",
    image_size=lambda spec: spec.min_size, bench=None,
)
