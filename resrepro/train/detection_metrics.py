"""Detection metrics of Tables 7 and 8: PASCAL VOC's AP at IoU 0.5 (VOC2007's 11-point and VOC2012's area
definition, "difficult" objects ignored) and COCO's mAP@[.5:.95] and mAP@.5 through pycocotools.

No maintained package computes VOC AP as the devkit does: torchmetrics and faster-coco-eval compute COCO's
101-point AP, and mean-average-precision counts difficult objects among the positives. So VOC's is here, as
the devkit's evaluation code computes it; COCO's is pycocotools', the reference implementation.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

VOC_IOU = 0.5


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP from a precision/recall curve (detections sorted by score), as the VOC devkit defines it.

    VOC2007: the mean over recall thresholds 0, 0.1, ..., 1 of the best precision at recall ≥ the threshold.
    VOC2010 and later (VOC2012's test): the area under the curve made monotone (each precision replaced by the
    best at any higher recall).
    """
    recall, precision = np.asarray(recall, dtype=np.float64), np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        # np.arange and a running sum of p / 11, as the devkit's Python port, to the last bit: its thresholds
        # are 0.30000000000000004 and so on, so a recall of exactly 3/10 does not reach "0.3".
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            ap += (precision[recall >= t].max() if (recall >= t).any() else 0.0) / 11
        return float(ap)
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    changes = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[changes + 1] - r[changes]) * p[changes + 1]))


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of ``boxes``, in continuous coordinates (the dataset's boxes are VOC's
    1-based inclusive corners shifted by one, which makes this equal to the devkit's "+1" formula)."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    return inter / (area + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter)


def _voc_class_ap(
    detections: list[dict[str, np.ndarray]], targets: list[dict[str, np.ndarray]], label: int, use_07_metric: bool
) -> float:
    """AP of one class: detections taken greedily by descending score, each a true positive when its best-IoU
    ground truth (IoU > 0.5) is not yet taken; a detection whose best match is difficult counts for nothing."""
    gts = [(t["boxes"][t["labels"] == label], t["difficult"][t["labels"] == label]) for t in targets]
    positives = sum(int((~difficult).sum()) for _, difficult in gts)
    if positives == 0:
        return math.nan
    mine = [d["labels"] == label for d in detections]
    image = np.concatenate([np.full(int(keep.sum()), i) for i, keep in enumerate(mine)]).astype(np.int64)
    score = np.concatenate([d["scores"][keep] for d, keep in zip(detections, mine, strict=True)])
    box = [d["boxes"][keep] for d, keep in zip(detections, mine, strict=True)]
    order = np.argsort(-score, kind="stable")
    boxes, images = np.concatenate(box)[order], image[order]
    taken = [np.zeros(len(d), dtype=bool) for _, d in gts]
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for d, (i, b) in enumerate(zip(images, boxes, strict=True)):
        gt_boxes, difficult = gts[i]
        overlaps = _iou(b, gt_boxes) if len(gt_boxes) else np.zeros(0)
        j = int(overlaps.argmax()) if len(overlaps) else -1
        if j < 0 or overlaps[j] <= VOC_IOU:
            fp[d] = 1
        elif not difficult[j]:
            if taken[i][j]:
                fp[d] = 1  # a second detection of an object already found
            else:
                tp[d], taken[i][j] = 1, True
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / positives
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(recall, precision, use_07_metric)


def voc_evaluate(detections: Sequence[dict[str, Any]], dataset: Any, use_07_metric: bool) -> dict[str, Any]:
    """PASCAL VOC mean AP at IoU 0.5 over the classes of ``dataset`` (a DetectionSet), "difficult" objects
    neither missed nor matched.

    ``detections`` has one dict per image of ``dataset``, in its order: ``boxes`` [K, 4] xyxy in the original
    image's pixels, ``scores`` [K], ``labels`` [K] in 1..C. A class without positives has AP NaN and is left
    out of the mean.
    """
    if len(detections) != len(dataset):
        raise ValueError(f"{len(detections)} detection lists for {len(dataset)} images")
    # Converted once, in float64 as the devkit computes.
    dets = [
        {
            "boxes": _numpy(d["boxes"]).reshape(-1, 4).astype(np.float64),
            "scores": _numpy(d["scores"]).astype(np.float64).reshape(-1),
            "labels": _numpy(d["labels"]).reshape(-1),
        }
        for d in detections
    ]
    targets = []
    for i in range(len(dataset)):
        t = dataset.target(i)
        targets.append(
            {"boxes": _numpy(t["boxes"]).astype(np.float64), **{k: _numpy(t[k]) for k in ("labels", "difficult")}}
        )
    ap = {
        name: _voc_class_ap(dets, targets, label, use_07_metric) for label, name in enumerate(dataset.classes, start=1)
    }
    scored = [v for v in ap.values() if not math.isnan(v)]
    return {"map": float(np.mean(scored)) if scored else math.nan, "ap": ap}


def coco_evaluate(detections: Sequence[dict[str, Any]], dataset: Any) -> dict[str, Any]:
    """COCO's mAP@[.5:.95] ("map") and mAP@.5 ("map50"), with per-class AP@[.5:.95] ("ap") and AP@.5 ("ap50"),
    by pycocotools' COCOeval on ``dataset.coco_ground_truth()``; ``detections`` as for :func:`voc_evaluate`.

    A class without ground truth has AP NaN (COCOeval leaves it out of its means too).
    """
    from pycocotools.cocoeval import COCOeval

    if len(detections) != len(dataset):
        raise ValueError(f"{len(detections)} detection lists for {len(dataset)} images")
    results = []
    for image_id, det in zip(dataset.image_ids, detections, strict=True):
        boxes = _numpy(det["boxes"]).reshape(-1, 4).astype(np.float64)
        for (x1, y1, x2, y2), score, label in zip(
            boxes.tolist(), _numpy(det["scores"]).tolist(), _numpy(det["labels"]).tolist(), strict=True
        ):
            category = dataset.category_ids[int(label) - 1]
            results.append({"image_id": image_id, "category_id": category, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": score})  # fmt: skip
    nan = dict.fromkeys(dataset.classes, math.nan)
    if not results:  # pycocotools cannot load an empty result list; no detection scores zero
        return {"map": 0.0, "map50": 0.0, "ap": nan, "ap50": dict(nan)}
    ground_truth = dataset.coco_ground_truth()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table to stdout
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), "bbox")
        evaluation.params.imgIds = list(dataset.image_ids)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # precision[iou, recall, category, area range, max detections]; area "all" and 100 detections per image are
    # index 0 and -1, the setting of the summary's first two numbers; -1 marks "no ground truth".
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    position = {c: k for k, c in enumerate(evaluation.params.catIds)}
    ap, ap50 = {}, {}
    for name, category in zip(dataset.classes, dataset.category_ids, strict=True):
        p = precision[:, :, position[category]]
        ap[name] = float(p[p > -1].mean()) if (p > -1).any() else math.nan
        ap50[name] = float(p[0][p[0] > -1].mean()) if (p[0] > -1).any() else math.nan
    return {"map": float(evaluation.stats[0]), "map50": float(evaluation.stats[1]), "ap": ap, "ap50": ap50}
