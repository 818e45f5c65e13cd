"""The detection dataset every reader returns: validated boxes per image, images decoded on access (a file that
fails to decode is skipped and counted), the ground truth as pycocotools wants it, and the horizontal flip."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF
from torchvision.tv_tensors import BoundingBoxFormat

from resrepro.data.decode import SkipCounter
from resrepro.errors import ResreproError


@dataclass(frozen=True)
class Record:
    """One image's annotation: ``boxes`` [N, 4] float32 xyxy in continuous pixel coordinates (the image spans
    [0, width] × [0, height]), ``labels`` [N] int64 in 1..C, ``difficult`` [N] bool."""

    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    image_id: int


def check_boxes(boxes: np.ndarray, width: int, height: int, source: str, written: np.ndarray | None = None) -> None:
    """Raise unless every box has positive area and lies inside its ``width`` × ``height`` image; a message
    shows the box as ``written`` in the file (default: as ``boxes``)."""
    if width <= 0 or height <= 0:
        raise ResreproError(f"{source}: image size {width}×{height} is not positive")
    shown = boxes if written is None else written
    for (x1, y1, x2, y2), box in zip(boxes.tolist(), shown.tolist(), strict=True):
        if not (x2 > x1 and y2 > y1):
            raise ResreproError(f"{source}: box {box} has zero area")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise ResreproError(f"{source}: box {box} lies outside its {width}×{height} image")


class DetectionSet(Dataset):
    """Images with their boxes: ``dataset[i]`` is ``(image, target)``, the image uint8 CHW RGB, or None when
    the file cannot be decoded (counted in ``skipped``; ``detection_collate`` leaves it out), and the target
    ``{"boxes", "labels", "difficult", "image_id"}``.

    ``classes`` has no background: label k names ``classes[k - 1]``. ``category_ids[k - 1]`` is the id that
    label k has in COCO-format ground truth; ``coco_file`` is the annotation file a COCO set came from (its
    crowd regions are needed by the evaluation, though they are no training targets).
    """

    def __init__(
        self,
        records: list[Record],
        classes: tuple[str, ...],
        name: str,
        *,
        category_ids: tuple[int, ...] | None = None,
        coco_file: Path | None = None,
    ) -> None:
        if not records:
            raise ResreproError(f"{name} has no images")
        self.records = records
        self.classes = classes
        self.name = name
        self.category_ids = category_ids or tuple(range(1, len(classes) + 1))
        self.coco_file = coco_file
        self._skips = SkipCounter()

    @property
    def skipped(self) -> int:
        """How many times an image failed to decode so far (a bad file counts once per epoch)."""
        return self._skips.count

    @property
    def image_ids(self) -> list[int]:
        return [r.image_id for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def target(self, index: int) -> dict[str, Any]:
        """The annotation of image ``index`` without decoding the image (what the metrics read)."""
        r = self.records[index]
        return {
            "boxes": torch.from_numpy(r.boxes).float().reshape(-1, 4),
            "labels": torch.from_numpy(r.labels).long(),
            "difficult": torch.from_numpy(r.difficult).bool(),
            "image_id": r.image_id,
        }

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, dict[str, Any]]:
        return self._skips.decode(lambda: _read_rgb(self.records[index].path)), self.target(index)

    def coco_ground_truth(self) -> Any:
        """The ground truth as a pycocotools ``COCO`` object: the annotation file of a COCO set (crowd regions
        included), or, for the other sets, one built from the records with "difficult" objects as crowd
        regions, which COCO's evaluation ignores as the VOC metric ignores difficult objects."""
        from pycocotools.coco import COCO

        # pycocotools prints its progress to stdout, where resrepro writes only data.
        with contextlib.redirect_stdout(io.StringIO()):
            if self.coco_file is not None:
                return COCO(str(self.coco_file))
            coco = COCO()
            coco.dataset = self._coco_dict()
            coco.createIndex()
        return coco

    def _coco_dict(self) -> dict[str, Any]:
        annotations = []
        for r in self.records:
            for (x1, y1, x2, y2), label, difficult in zip(r.boxes.tolist(), r.labels, r.difficult, strict=True):
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": r.image_id,
                        "category_id": self.category_ids[int(label) - 1],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": int(difficult),
                    }
                )
        return {
            "images": [{"id": r.image_id, "width": r.width, "height": r.height} for r in self.records],
            "annotations": annotations,
            "categories": [{"id": c, "name": n} for c, n in zip(self.category_ids, self.classes, strict=True)],
        }


def _read_rgb(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return TF.pil_to_tensor(image.convert("RGB"))


def hflip(image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    """The paper's horizontal-flip augmentation: mirror a CHW image and its xyxy boxes."""
    height, width = image.shape[-2:]
    boxes = TF.horizontal_flip_bounding_boxes(
        target["boxes"], format=BoundingBoxFormat.XYXY, canvas_size=(height, width)
    )
    return TF.horizontal_flip(image), {**target, "boxes": boxes}


def detection_collate(batch: list[tuple[torch.Tensor | None, dict[str, Any]]]) -> tuple[list, list] | None:
    """A batch as (images, targets) lists (detection images differ in size, so they are not stacked), without
    the images that failed to decode; None if all of them failed."""
    kept = [sample for sample in batch if sample[0] is not None]
    if not kept:
        return None
    images, targets = zip(*kept, strict=True)
    return list(images), list(targets)
