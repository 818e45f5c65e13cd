"""MS COCO from its images and instances JSON through pycocotools: the 80 categories as labels 1..80 (and back to
their ids for the evaluation), xywh boxes as xyxy, crowd regions out of training."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from resrepro.data.detection.dataset import DetectionSet, Record, check_boxes
from resrepro.errors import ResreproError

LAYOUT = (
    "DIR/train2014/*.jpg, DIR/val2014/*.jpg and DIR/annotations/instances_{train2014,val2014}.json"
    " (or the 2017 names), as the COCO zip files unpack"
)
# The paper trains on the 80k train2014 images and tests on the 40k val2014 ones; the 2017 release regroups the
# same images (train2017 = train2014 + 35k of val2014), so its val2017 is no test set for a 2014-trained model.
SPLITS = {"train": ("train2014", "train2017"), "test": ("val2014", "val2017")}


def coco_split(data_dir: Path, split: str) -> DetectionSet:
    """``split`` ("train" or "test") of COCO under ``data_dir``: 2014's files, else 2017's."""
    root = Path(data_dir).expanduser()
    for name in SPLITS[split]:
        annotations = root / "annotations" / f"instances_{name}.json"
        if annotations.is_file():
            return read_coco(annotations, root / name, f"coco/{split} ({name})", train=split == "train")
    tried = ", ".join(str(root / "annotations" / f"instances_{n}.json") for n in SPLITS[split])
    raise ResreproError(f"no COCO annotations for {split}: none of {tried} exists; expected COCO as {LAYOUT}")


def read_coco(annotation_file: Path, image_dir: Path, name: str, *, train: bool) -> DetectionSet:
    """The images of a COCO instances file, read from ``image_dir``/<file_name>.

    Crowd regions are no training targets; the evaluation reads them from the file (they mark areas where a
    detection is neither right nor wrong). With ``train``, images with no box left are dropped, since they
    teach the detector nothing but background. Zero-width or zero-height boxes are dropped: the official
    train2017 file has two, which a strict check would make unloadable.
    """
    coco = _load(annotation_file)
    categories = sorted(coco.cats.values(), key=lambda c: c["id"])
    if not categories:
        raise ResreproError(f"{annotation_file} lists no categories")
    label = {c["id"]: k + 1 for k, c in enumerate(categories)}
    records = []
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        record = _record(coco, info, label, annotation_file, image_dir)
        if not train or len(record.labels):
            records.append(record)
    if not records:
        raise ResreproError(f"{annotation_file} has no image with an object to train on")
    return DetectionSet(
        records,
        tuple(c["name"] for c in categories),
        name,
        category_ids=tuple(c["id"] for c in categories),
        coco_file=annotation_file,
    )


def _load(annotation_file: Path) -> Any:
    from pycocotools.coco import COCO

    try:
        data = json.loads(annotation_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResreproError(f"cannot read {annotation_file} as JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ResreproError(f"{annotation_file} is no COCO instances file (it needs images, annotations, categories)")
    if not data["images"]:
        raise ResreproError(f"{annotation_file} lists no images")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ResreproError(f"{annotation_file} has no {key} list; expected a COCO instances file")
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
            coco.createIndex()
    except (KeyError, TypeError) as exc:
        raise ResreproError(f"{annotation_file} is no COCO instances file (missing {exc})") from None
    for ann in data["annotations"]:
        if ann.get("image_id") not in coco.imgs:
            raise ResreproError(f"{annotation_file}: annotation {ann.get('id')} refers to unknown image")
        if ann.get("category_id") not in coco.cats:
            raise ResreproError(
                f"{annotation_file}: annotation {ann.get('id')} has unknown category {ann.get('category_id')}"
            )
    return coco


def _record(coco: Any, info: dict, label: dict[int, int], annotation_file: Path, image_dir: Path) -> Record:
    source = f"{annotation_file} (image {info.get('id')})"
    try:
        path, width, height = image_dir / info["file_name"], int(info["width"]), int(info["height"])
        anns = [a for a in coco.imgToAnns.get(info["id"], []) if not a.get("iscrowd", 0)]
        xywh = np.array([[float(v) for v in a["bbox"]] for a in anns], dtype=np.float32).reshape(-1, 4)
        categories = [a["category_id"] for a in anns]
    except (KeyError, TypeError, ValueError) as exc:
        raise ResreproError(f"{source} is malformed ({type(exc).__name__}: {exc})") from None
    if not path.is_file():
        raise ResreproError(f"{source}: image file {path} does not exist; expected COCO as {LAYOUT}")
    if (xywh[:, 2:] < 0).any():
        raise ResreproError(f"{source}: a box (x, y, w, h) has a negative width or height")
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    # Boxes taken from float polygons can cross the border by a rounding error: those are clipped (as
    # torchvision's reference does), a box further out is an error.
    clipped = np.clip(boxes, 0, np.array([width, height, width, height], dtype=np.float32))
    boxes = np.where((np.abs(clipped - boxes) < 1).all(axis=1, keepdims=True), clipped, boxes)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, xywh = boxes[keep], xywh[keep]
    check_boxes(boxes, width, height, f"{source} (x, y, w, h)", xywh)
    labels = np.array([label[c] for c, k in zip(categories, keep, strict=True) if k], dtype=np.int64)
    return Record(path, width, height, boxes, labels, np.zeros(len(labels), dtype=bool), int(info["id"]))
