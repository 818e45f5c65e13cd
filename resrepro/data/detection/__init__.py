"""Object detection data (Tables 7 and 8): PASCAL VOC and MS COCO in their on-disk formats and the tiny digits
set, each as a :class:`DetectionSet` from the one door in, :func:`load_detection`."""

from __future__ import annotations

from pathlib import Path

from resrepro.data.detection.dataset import DetectionSet, Record, detection_collate, hflip
from resrepro.errors import ResreproError

DATASETS = ("voc07+12", "voc07++12", "coco", "digits-voc", "digits-coco")
SPLITS = ("train", "test")


def load_detection(dataset: str, split: str, data_dir: Path | None = None) -> DetectionSet:
    """``split`` ("train" or "test") of ``dataset``, read from ``data_dir``.

    "voc07+12" trains on VOC07 trainval + VOC12 trainval and tests on VOC07 test; "voc07++12" trains on VOC07
    trainval + test + VOC12 trainval and tests on VOC12 test; "coco" trains on train2014 (80k) and tests on
    val2014 (40k). "digits-voc" and "digits-coco" are the same tiny offline set read through the VOC and the
    COCO reader, written on first use into ``data_dir`` (default: the cache).
    """
    if dataset not in DATASETS:
        raise ResreproError(f"unknown detection dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ResreproError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if dataset.startswith("digits-"):
        return _digits(dataset, split, data_dir)
    if data_dir is None:
        raise ResreproError(f"{dataset} needs a data directory (--data-dir)")
    if dataset == "coco":
        from resrepro.data.detection.coco import coco_split

        return coco_split(Path(data_dir), split)
    from resrepro.data.detection.voc import voc_union

    return voc_union(Path(data_dir), dataset, split)


def _digits(dataset: str, split: str, data_dir: Path | None) -> DetectionSet:
    from resrepro.data.detection.tiny import (
        COCO_FILES,
        DIGIT_CLASSES,
        DIGITS_DETECTION_DIR,
        IMAGE_SETS,
        VOC_DIR,
        digits_detection,
    )

    root = digits_detection(data_dir or DIGITS_DETECTION_DIR)
    if dataset == "digits-coco":
        from resrepro.data.detection.coco import read_coco

        images = root / VOC_DIR / "JPEGImages"  # one copy of the images, described twice
        return read_coco(root / COCO_FILES[split], images, f"{dataset}/{split}", train=split == "train")
    from resrepro.data.detection.voc import read_voc

    return DetectionSet(read_voc(root / VOC_DIR, IMAGE_SETS[split], DIGIT_CLASSES), DIGIT_CLASSES, f"{dataset}/{split}")


__all__ = ["DATASETS", "DetectionSet", "Record", "detection_collate", "hflip", "load_detection"]
