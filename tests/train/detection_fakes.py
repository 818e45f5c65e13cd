"""Stand-ins for the detection data and metrics (the interface of resrepro.data.detection and
resrepro.train.detection_metrics), used only where those modules are not importable."""

import types

import torch
from torch.utils.data import Dataset
from torchvision.ops import box_iou


class FakeSet(Dataset):
    """Images of bright rectangles on noise, two classes by colour; deterministic per split."""

    classes = ("red", "green")

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            image = (torch.rand(3, 48, 64, generator=g) * 60).to(torch.uint8)
            boxes, labels = [], []
            for _ in range(1 + i % 2):
                x, y = int(torch.randint(0, 40, (), generator=g)), int(torch.randint(0, 24, (), generator=g))
                label = 1 + int(torch.randint(0, 2, (), generator=g))
                image[label - 1, y:y + 20, x:x + 20] = 250
                boxes.append([x, y, x + 20, y + 20])
                labels.append(label)
            self.items.append((image, {"boxes": torch.tensor(boxes, dtype=torch.float32),
                                       "labels": torch.tensor(labels), "difficult": torch.zeros(len(boxes), dtype=bool),
                                       "image_id": i}))
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        image, target = self.items[i]
        return image.clone(), {k: v.clone() if torch.is_tensor(v) else v for k, v in target.items()}


def load_detection(dataset, split, data_dir):
    return FakeSet(8 if split == "train" else 4, 0 if split == "train" else 1)


def hflip(image, target):
    w = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes}


def voc_evaluate(detections, dataset, use_07_metric):
    """Not AP: the fraction of ground-truth boxes found (IoU >= 0.5, same class), per class."""
    found = {c: [0, 0] for c in range(1, len(dataset.classes) + 1)}
    for d, (_, t) in zip(detections, (dataset[i] for i in range(len(dataset))), strict=True):
        for box, label in zip(t["boxes"], t["labels"], strict=True):
            same = d["boxes"][d["labels"] == label]
            hit = len(same) > 0 and bool((box_iou(box[None], same) >= 0.5).any())
            found[int(label)][0] += hit
            found[int(label)][1] += 1
    ap = {dataset.classes[c - 1]: h / max(n, 1) for c, (h, n) in found.items()}
    return {"map": sum(ap.values()) / len(ap), "ap": ap}


def coco_evaluate(detections, dataset):
    r = voc_evaluate(detections, dataset, False)
    return {**r, "map50": r["map"]}


def install(monkeypatch) -> None:
    """Put the stand-ins in place of the modules that are not there yet."""
    import importlib
    import sys

    for name, attrs in (("resrepro.data.detection", ("load_detection", "hflip")),
                        ("resrepro.train.detection_metrics", ("voc_evaluate", "coco_evaluate"))):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            module = types.ModuleType(name)
            for a in attrs:
                setattr(module, a, globals()[a])
            monkeypatch.setitem(sys.modules, name, module)
