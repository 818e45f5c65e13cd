"""The detection tiny scale: scikit-learn's handwritten digits pasted at random places and sizes onto larger
noisy canvases, several per image, written once to the cache as PASCAL VOC files and as COCO JSON."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree.ElementTree import Element, ElementTree, SubElement

import numpy as np
from PIL import Image

from resrepro.io import build_folder_once

DIGITS_DETECTION_DIR = "~/.cache/resrepro/data/digits-detection"
DIGIT_CLASSES = tuple(str(d) for d in range(10))
VOC_DIR = "VOCdevkit/VOCdigits"  # JPEGImages, Annotations, ImageSets/Main/{trainval,test}.txt
COCO_FILES = {"train": "annotations/instances_train.json", "test": "annotations/instances_test.json"}
IMAGE_SETS = {"train": "trainval", "test": "test"}
# Sized so that a narrow Faster R-CNN trains on a CPU in minutes: 2..5 digits of 20..44 px on each canvas.
NUM_IMAGES = {"train": 600, "test": 200}
CANVAS = (96, 128)
DIGIT_SIDE = (20, 44)
OBJECTS = (2, 5)
# VOC's "difficult": an object hard to recognise. Here a faint digit (a quarter of the contrast), 1 in 8.
DIFFICULT_RATE, DIFFICULT_CONTRAST = 0.125, 0.25
SEED = {"train": 0, "test": 1}


def digits_detection(root: str | Path = DIGITS_DETECTION_DIR) -> Path:
    """``root`` holding the digits detection set, written if missing (the same pixels and boxes every time).

    Train canvases paste digits of :func:`resrepro.data.tiny.digits`' train split, test canvases its test
    split, so no digit image is in both. VOC_DIR has the images and VOC XML; COCO_FILES describe the same images
    with "difficult" digits as crowd regions, COCO's way of marking what the metric ignores.
    """
    return build_folder_once(root, _write)


def _write(folder: Path) -> None:
    from resrepro.data.tiny import digits

    voc = folder / VOC_DIR
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    for (split, count), images in zip(NUM_IMAGES.items(), digits(), strict=True):
        # numpy, not torch: torch's thread pool makes these small array operations 100x slower on a busy CPU.
        rng = np.random.default_rng(SEED[split])
        grey, labels = images.images[:, 0].numpy(), images.labels.numpy()
        names, coco_images, coco_annotations = [], [], []
        for i in range(count):
            name = f"{split}_{i:04d}"
            canvas, objects = _canvas(grey, labels, rng)
            Image.fromarray(canvas).save(voc / "JPEGImages" / f"{name}.jpg", "JPEG", quality=95)
            _write_xml(voc / "Annotations" / f"{name}.xml", name, canvas.shape, objects)
            names.append(name)
            coco_images.append({"id": i + 1, "file_name": f"{name}.jpg", "width": canvas.shape[1],
                                "height": canvas.shape[0]})  # fmt: skip
            for label, (x1, y1, x2, y2), difficult in objects:
                coco_annotations.append(
                    {
                        "id": len(coco_annotations) + 1,
                        "image_id": i + 1,
                        "category_id": label + 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": int(difficult),
                    }
                )
        (voc / "ImageSets" / "Main" / f"{IMAGE_SETS[split]}.txt").write_text("".join(f"{n}\n" for n in names))
        coco = {
            "images": coco_images,
            "annotations": coco_annotations,
            "categories": [{"id": k + 1, "name": name} for k, name in enumerate(DIGIT_CLASSES)],
        }
        path = folder / COCO_FILES[split]
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(coco, indent=1) + "\n")


def _canvas(digits: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """One H×W×3 uint8 canvas and its objects ``(label, (x1, y1, x2, y2), difficult)``, boxes in continuous
    pixel coordinates tight around the digit's ink."""
    height, width = (int(v) for v in rng.integers(CANVAS[0], CANVAS[1], size=2, endpoint=True))
    background = rng.uniform(0, 80, size=3)
    canvas = background + 12 * rng.standard_normal((height, width, 3))
    taken: list[tuple[int, int, int]] = []
    objects = []
    for _ in range(int(rng.integers(OBJECTS[0], OBJECTS[1], endpoint=True))):
        k = int(rng.integers(len(labels)))
        side = int(rng.integers(DIGIT_SIDE[0], DIGIT_SIDE[1], endpoint=True))
        x, y = int(rng.integers(width - side, endpoint=True)), int(rng.integers(height - side, endpoint=True))
        colour = rng.uniform(120, 255, size=3)
        difficult = bool(rng.random() < DIFFICULT_RATE)
        # Squares that overlap an earlier digit's are dropped, so no digit hides another.
        if any(x < tx + ts and tx < x + side and y < ty + ts and ty < y + side for tx, ty, ts in taken):
            continue
        taken.append((x, y, side))
        digit = Image.fromarray(digits[k]).resize((side, side), Image.BILINEAR)
        ink = np.asarray(digit, dtype=np.float64)[:, :, None] / 255
        alpha = ink * (DIFFICULT_CONTRAST if difficult else 1.0)
        region = canvas[y : y + side, x : x + side]
        canvas[y : y + side, x : x + side] = region * (1 - alpha) + colour * alpha
        rows, cols = np.nonzero(ink[:, :, 0] > 0.25)
        box = (x + int(cols.min()), y + int(rows.min()), x + int(cols.max()) + 1, y + int(rows.max()) + 1)
        objects.append((int(labels[k]), box, difficult))
    return canvas.round().clip(0, 255).astype(np.uint8), objects


def _write_xml(path: Path, name: str, shape: tuple[int, ...], objects: list) -> None:
    """A VOC annotation: 1-based pixel indices with both corners inside the box, as the VOC devkit writes."""
    root = Element("annotation")
    SubElement(root, "folder").text = "VOCdigits"
    SubElement(root, "filename").text = f"{name}.jpg"
    size = SubElement(root, "size")
    for tag, value in zip(("width", "height", "depth"), (shape[1], shape[0], shape[2]), strict=True):
        SubElement(size, tag).text = str(value)
    for label, (x1, y1, x2, y2), difficult in objects:
        obj = SubElement(root, "object")
        SubElement(obj, "name").text = DIGIT_CLASSES[label]
        SubElement(obj, "difficult").text = str(int(difficult))
        box = SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x1 + 1, y1 + 1, x2, y2), strict=True):
            SubElement(box, tag).text = str(value)
    ElementTree(root).write(path, encoding="utf-8")
