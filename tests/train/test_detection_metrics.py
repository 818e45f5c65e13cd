"""VOC AP (VOC2007 11-point, VOC2012 area) and COCO mAP (pycocotools) against cases worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from resrepro.data.detection import DetectionSet, Record
from resrepro.data.detection.coco import read_coco
from resrepro.train.detection_metrics import coco_evaluate, voc_ap, voc_evaluate


def record(image_id: int, objects: list[tuple[int, list[float], bool]], size: int = 100) -> Record:
    """An image's annotation: objects (label, xyxy, difficult); the file is never opened by the metrics."""
    boxes = np.array([o[1] for o in objects], dtype=np.float32).reshape(-1, 4)
    labels = np.array([o[0] for o in objects], dtype=np.int64)
    difficult = np.array([o[2] for o in objects], dtype=bool)
    return Record(Path(f"{image_id}.jpg"), size, size, boxes, labels, difficult, image_id)


def det(*rows: tuple[int, float, list[float]]) -> dict[str, torch.Tensor]:
    """One image's detections from rows (label, score, xyxy)."""
    return {
        "labels": torch.tensor([r[0] for r in rows], dtype=torch.int64),
        "scores": torch.tensor([r[1] for r in rows]),
        "boxes": torch.tensor([r[2] for r in rows], dtype=torch.float32).reshape(-1, 4),
    }


CAT, DOG, BIRD = 1, 2, 3
A, B, C, D = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [0, 0, 10, 10]


@pytest.fixture
def hand_case() -> tuple[DetectionSet, list[dict]]:
    """Cats: A and B in image 0, C (difficult) in image 0, D in image 1 -> 3 positives. One dog in image 1,
    never detected. No bird anywhere.

    Cat detections by score:     match                       tp fp  recall precision
      .9 image 0 on A            A, IoU 1                    1  0   1/3    1
      .8 image 0 on A again      A, already found            1  1   1/3    1/2
      .7 image 0 on C            C is difficult: ignored     (neither; the curve does not move)
      .6 image 1 [0,0,10,12]     D, IoU 100/120 = .83        2  1   2/3    2/3
      .5 image 0 [25,0,35,10]    B, IoU 50/150 = .33 <= .5   2  2   2/3    1/2

    VOC2007, 11 points: the best precision at recall >= t is 1 for t = 0, .1, .2, .3 (1/3 reaches the devkit's
    "0.3", 0.30000000000000004), 2/3 for t = .4, .5, .6, none (0) for t = .7 ... 1: (4 + 3 * 2/3) / 11 = 6/11.
    VOC2012, area: precision made monotone from the right is 1 up to recall 1/3 and 2/3 up to 2/3, so
    1/3 * 1 + 1/3 * 2/3 = 5/9. The dog: AP 0. The bird has no positives: NaN, out of the mean.
    """
    dataset = DetectionSet(
        [record(0, [(CAT, A, False), (CAT, B, False), (CAT, C, True)]), record(1, [(CAT, D, False), (DOG, C, False)])],
        ("cat", "dog", "bird"),
        "hand",
    )
    detections = [
        det((CAT, 0.9, A), (CAT, 0.8, A), (CAT, 0.7, C), (CAT, 0.5, [25, 0, 35, 10])),
        det((CAT, 0.6, [0, 0, 10, 12])),
    ]
    return dataset, detections


def test_voc_ap_of_the_hand_worked_case(hand_case):
    dataset, detections = hand_case
    voc07 = voc_evaluate(detections, dataset, use_07_metric=True)
    assert voc07["ap"]["cat"] == pytest.approx(6 / 11, abs=1e-12) and voc07["ap"]["dog"] == 0.0
    assert math.isnan(voc07["ap"]["bird"]) and voc07["map"] == pytest.approx((6 / 11 + 0) / 2, abs=1e-12)
    voc12 = voc_evaluate(detections, dataset, use_07_metric=False)
    assert voc12["ap"]["cat"] == pytest.approx(5 / 9, abs=1e-12) and voc12["map"] == pytest.approx(5 / 18, abs=1e-12)


def test_a_difficult_object_is_neither_a_miss_nor_a_hit(hand_case):
    dataset, detections = hand_case
    # Without the detection on C, nothing changes: finding a difficult object is not required...
    without = [det(*[(CAT, s, b) for s, b in [(0.9, A), (0.8, A), (0.5, [25, 0, 35, 10])]]), detections[1]]
    assert voc_evaluate(without, dataset, True)["ap"]["cat"] == pytest.approx(6 / 11, abs=1e-12)
    # ...and were C an ordinary object, the .7 detection would be a hit and C a fourth positive: recall 1/4,
    # 1/4, 2/4, 3/4, 3/4 with precision 1, 1/2, 2/3, 3/4, 3/5; 11-point: 1 for t <= .2, 3/4 for .3 ... .7.
    dataset.records[0] = record(0, [(CAT, A, False), (CAT, B, False), (CAT, C, False)])
    assert voc_evaluate(detections, dataset, True)["ap"]["cat"] == pytest.approx((3 + 5 * 3 / 4) / 11, abs=1e-12)


def test_voc_ap_definitions():
    one = np.array([1.0])
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0]), True) == pytest.approx(1.0)
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0]), False) == pytest.approx(1.0)
    # Recall exactly 3/10: the devkit's 11 thresholds (np.arange) put "0.3" at 0.30000000000000004, above it.
    assert voc_ap(np.array([0.3]), one, True) == pytest.approx(3 / 11)
    assert voc_ap(np.array([0.3]), one, False) == pytest.approx(0.3)
    # A dip in precision is filled by the best precision at higher recall (the "interpolation").
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]), False) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert voc_ap(np.array([]), np.array([]), True) == 0.0


def write_coco(tmp_path: Path, annotations: list[dict]) -> DetectionSet:
    """Two 100×100 images (ids 5 and 6) and categories with ids 3 and 17, as labels 1 and 2."""
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in (5, 6)]
    for info in images:
        (tmp_path / info["file_name"]).write_bytes(b"")  # never decoded by the metric
    categories = [{"id": 3, "name": "car"}, {"id": 17, "name": "cat"}]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return read_coco(path, tmp_path, "hand", train=False)


def ann(ann_id: int, image_id: int, category: int, xywh: list[float], crowd: int = 0) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category, "bbox": xywh, "area": xywh[2] * xywh[3],
            "iscrowd": crowd}  # fmt: skip


def test_coco_map_of_hand_worked_cases(tmp_path):
    # One cat per image and a crowd region in image 6 (a detection on it is neither right nor wrong).
    dataset = write_coco(
        tmp_path,
        [ann(1, 5, 17, [0, 0, 100, 100]), ann(2, 6, 17, [10, 10, 40, 40]), ann(3, 6, 17, [60, 60, 30, 30], crowd=1)],
    )
    perfect = [det((2, 0.9, [0, 0, 100, 100])), det((2, 0.8, [10, 10, 50, 50]), (2, 0.7, [60, 60, 90, 90]))]
    result = coco_evaluate(perfect, dataset)
    assert result["map"] == pytest.approx(1.0) and result["map50"] == pytest.approx(1.0)
    assert result["ap"]["cat"] == pytest.approx(1.0) and math.isnan(result["ap"]["car"])  # no car anywhere
    # Half: image 6's cat missed. Recall .5 at precision 1; COCO takes the precision at the 101 recall
    # thresholds 0, .01, ..., 1: 51 of them are <= .5, so AP = 51/101 at every IoU threshold.
    half = [perfect[0], det()]
    assert coco_evaluate(half, dataset)["map"] == pytest.approx(51 / 101)
    assert coco_evaluate(half, dataset)["map50"] == pytest.approx(51 / 101)
    # Loose boxes: IoU 62/100 with each cat. A hit at IoU thresholds .5, .55, .6 out of the 10 from .5 to .95.
    loose = [det((2, 0.9, [0, 0, 100, 62])), det((2, 0.8, [10, 10, 50, 34.8]))]
    result = coco_evaluate(loose, dataset)
    assert result["map"] == pytest.approx(0.3) and result["map50"] == pytest.approx(1.0)
    assert result["ap50"]["cat"] == pytest.approx(1.0)
    # Label 2 maps back to category 17: called a car (label 1, category 3), the same boxes score nothing.
    wrong = [{**d, "labels": torch.ones_like(d["labels"])} for d in perfect]
    assert coco_evaluate(wrong, dataset)["map"] == pytest.approx(0.0)
    assert coco_evaluate([det(), det()], dataset)["map"] == 0.0


def test_coco_evaluation_of_a_voc_style_set_ignores_difficult_objects(hand_case):
    dataset, _ = hand_case
    # Every ordinary object found, plus a detection on the difficult C: perfect, C being a crowd region.
    detections = [det((CAT, 0.9, A), (CAT, 0.8, B), (CAT, 0.7, C)), det((CAT, 0.9, D), (DOG, 0.9, C))]
    result = coco_evaluate(detections, dataset)
    assert result["map"] == pytest.approx(1.0) and result["ap"]["dog"] == pytest.approx(1.0)
    assert math.isnan(result["ap"]["bird"])
