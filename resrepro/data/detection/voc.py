"""PASCAL VOC in the devkit's layout (VOCdevkit/VOC2007, VOC2012: JPEGImages, Annotations, ImageSets/Main) and
the paper's training unions "07+12" and "07++12"; every annotation is read and checked before training starts."""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import ParseError

import numpy as np
from torchvision.datasets import VOCDetection

try:  # what torchvision's reader uses when it is installed: safe against hostile XML
    from defusedxml.ElementTree import parse as parse_xml
except ImportError:
    from xml.etree.ElementTree import parse as parse_xml

from resrepro.data.detection.dataset import DetectionSet, Record, check_boxes
from resrepro.errors import ResreproError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
LAYOUT = (
    "DIR/VOCdevkit/VOC2007 and DIR/VOCdevkit/VOC2012, each with JPEGImages/<id>.jpg, Annotations/<id>.xml"
    " and ImageSets/Main/<set>.txt, as the VOC tar files unpack"
)
# (year folder, image set) per split, Table 7's unions; the VOC2007 test tar unpacks into VOC2007 beside trainval.
UNIONS = {
    "voc07+12": {"train": [("VOC2007", "trainval"), ("VOC2012", "trainval")], "test": [("VOC2007", "test")]},
    "voc07++12": {
        "train": [("VOC2007", "trainval"), ("VOC2007", "test"), ("VOC2012", "trainval")],
        "test": [("VOC2012", "test")],
    },
}
VOC12_TEST = (
    "the VOC2012 test annotations are not public (the VOC server scores submitted detections); to evaluate"
    " locally, put an annotated copy in VOCdevkit/VOC2012 (ImageSets/Main/test.txt and Annotations/<id>.xml)"
)


def voc_union(data_dir: Path, dataset: str, split: str) -> DetectionSet:
    """The images of ``split`` ("train" or "test") of ``dataset`` ("voc07+12" or "voc07++12") under ``data_dir``."""
    devkit = Path(data_dir).expanduser() / "VOCdevkit"
    if not devkit.is_dir():
        raise ResreproError(f"no VOCdevkit folder in {data_dir}; expected PASCAL VOC as {LAYOUT}")
    parts = UNIONS[dataset][split]
    records: list[Record] = []
    try:
        for year, image_set in parts:
            records += read_voc(devkit / year, image_set, VOC_CLASSES, first_id=len(records))
    except ResreproError as exc:
        if (year, image_set) == ("VOC2012", "test"):
            raise ResreproError(f"{exc}; {VOC12_TEST}") from None
        raise
    if (year, image_set) == ("VOC2012", "test") and not any(len(r.labels) for r in records):
        raise ResreproError(f"{devkit / year} has no objects annotated in its test images; {VOC12_TEST}")
    name = f"{dataset}/{split} ({' + '.join(f'{y} {s}' for y, s in parts)})"
    return DetectionSet(records, VOC_CLASSES, name)


def read_voc(year_dir: Path, image_set: str, classes: tuple[str, ...], first_id: int = 0) -> list[Record]:
    """The images listed in ``year_dir``/ImageSets/Main/``image_set``.txt with their Annotations XML.

    VOC's XML counts pixels from 1 with both corners inside the box, so ``xmin - 1`` and ``xmax`` are the
    box's edges in continuous coordinates: IoU computed on these equals the devkit's "+1" formula.
    """
    # torchvision's VOCDetection parses the XML, but its constructor rejects VOC2012's test set and reports
    # any missing folder as "Dataset not found"; its parser is all we use.
    for sub in ("JPEGImages", "Annotations"):
        if not (year_dir / sub).is_dir():
            raise ResreproError(f"missing {year_dir / sub}; expected PASCAL VOC as {LAYOUT}")
    list_file = year_dir / "ImageSets" / "Main" / f"{image_set}.txt"
    if not list_file.is_file():
        raise ResreproError(f"missing image set {list_file}; expected PASCAL VOC as {LAYOUT}")
    ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise ResreproError(f"image set {list_file} lists no images")
    index = {name: k + 1 for k, name in enumerate(classes)}
    return [_read_image(year_dir, image_id, index, first_id + i) for i, image_id in enumerate(ids)]


def _read_image(year_dir: Path, voc_id: str, index: dict[str, int], image_id: int) -> Record:
    xml = year_dir / "Annotations" / f"{voc_id}.xml"
    image = year_dir / "JPEGImages" / f"{voc_id}.jpg"
    if not xml.is_file():
        raise ResreproError(f"image {voc_id} is listed in {year_dir}/ImageSets but has no annotation {xml}")
    if not image.is_file():
        raise ResreproError(f"image {voc_id} is listed in {year_dir}/ImageSets but {image} does not exist")
    try:
        tree = VOCDetection.parse_voc_xml(parse_xml(xml).getroot())["annotation"]
        width, height = int(tree["size"]["width"]), int(tree["size"]["height"])
        objects = tree.get("object", [])
        names = [obj["name"] for obj in objects]
        corners = [[float(obj["bndbox"][k]) for k in ("xmin", "ymin", "xmax", "ymax")] for obj in objects]
        # VOC2012 leaves out <difficult> on some objects: absent means 0.
        difficult = [obj.get("difficult", "0") == "1" for obj in objects]
    except (ParseError, KeyError, TypeError, ValueError) as exc:
        raise ResreproError(f"{xml} is not a VOC annotation ({type(exc).__name__}: {exc})") from None
    several = next((n for n in names if not isinstance(n, str)), None)
    if several is not None:  # <name> given twice in one object: which class the box is cannot be told
        raise ResreproError(f"{xml}: an object's <name> is {several!r}, not one class name; each object names one "
                            "class")
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise ResreproError(f"{xml}: unknown class {unknown[0]!r}; the classes are {', '.join(index)}")
    written = np.array(corners, dtype=np.float32).reshape(-1, 4)
    boxes = written - np.array([1, 1, 0, 0], dtype=np.float32)
    check_boxes(boxes, width, height, f"{xml} (xmin, ymin, xmax, ymax)", written)
    labels = np.array([index[n] for n in names], dtype=np.int64)
    return Record(image, width, height, boxes, labels, np.array(difficult, dtype=bool), image_id)
