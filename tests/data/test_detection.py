"""Detection data: VOC XML and COCO JSON read from files in the real formats, the paper's VOC unions, one clear
error for each kind of bad input, unreadable images skipped and counted, hflip, and the tiny digits set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from resrepro.data.detection import DetectionSet, detection_collate, hflip, load_detection
from resrepro.data.detection.coco import read_coco
from resrepro.data.detection.tiny import CANVAS, COCO_FILES, DIGIT_CLASSES, VOC_DIR, digits_detection
from resrepro.errors import ResreproError

CAT, DOG, PERSON = 8, 12, 15  # labels: 1 + the class's index in VOC's alphabetical list


def write_image(path: Path, width: int = 64, height: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (90, 120, 150)).save(path, "JPEG")


def write_voc(devkit: Path, year: str, image_set: str, images: dict[str, list], size=(64, 48)) -> None:
    """VOC files for ``images``: id -> [(name, xmin, ymin, xmax, ymax, difficult or None)], as the devkit has them
    (None leaves the <difficult> tag out, as some VOC2012 objects do)."""
    root = devkit / year
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for voc_id, objects in images.items():
        write_image(root / "JPEGImages" / f"{voc_id}.jpg", *size)
        xml = [f"<annotation><filename>{voc_id}.jpg</filename>"]
        xml.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
        for name, xmin, ymin, xmax, ymax, difficult in objects:
            tag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
            xml.append(
                f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>{tag}<bndbox><xmin>{xmin}"
                f"</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
            )
        (root / "Annotations" / f"{voc_id}.xml").write_text("".join(xml) + "</annotation>\n")
    with open(root / "ImageSets" / "Main" / f"{image_set}.txt", "a") as f:
        f.write("".join(f"{voc_id}\n" for voc_id in images))


@pytest.fixture
def voc(tmp_path) -> Path:
    devkit = tmp_path / "VOCdevkit"
    write_voc(devkit, "VOC2007", "trainval", {"000005": [("cat", 1, 1, 10, 20, 0), ("dog", 30, 5, 64, 48, 1)]})
    write_voc(devkit, "VOC2007", "test", {"000001": [("person", 5, 6, 7, 8, 0)], "000002": []})
    write_voc(devkit, "VOC2012", "trainval", {"2008_000002": [("person", 2, 3, 40, 30, None)]})
    return tmp_path


def test_voc_xml_becomes_continuous_xyxy_with_labels_and_difficult(voc):
    train = load_detection("voc07+12", "train", voc)
    assert isinstance(train, DetectionSet) and len(train.classes) == 20 and train.classes[CAT - 1] == "cat"
    image, target = train[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 48, 64)
    # VOC counts pixels from 1, both corners inside: xmin=1..xmax=10 covers the 10 pixels [0, 10).
    assert target["boxes"].tolist() == [[0, 0, 10, 20], [29, 4, 64, 48]]
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["labels"].tolist() == [CAT, DOG] and target["difficult"].tolist() == [False, True]
    # The VOC2012 object has no <difficult> tag: not difficult.
    assert train.target(1)["difficult"].tolist() == [False] and train.target(1)["labels"].tolist() == [PERSON]
    assert [train.target(i)["image_id"] for i in range(len(train))] == [0, 1] and train.skipped == 0


def test_the_paper_unions(voc):
    # 07+12: train VOC07 trainval + VOC12 trainval, test VOC07 test (an image without objects is kept).
    assert [r.path.name for r in load_detection("voc07+12", "train", voc).records] == ["000005.jpg", "2008_000002.jpg"]
    assert [r.path.name for r in load_detection("voc07+12", "test", voc).records] == ["000001.jpg", "000002.jpg"]
    # 07++12 adds VOC07 test to the training images.
    names = [r.path.name for r in load_detection("voc07++12", "train", voc).records]
    assert names == ["000005.jpg", "000001.jpg", "000002.jpg", "2008_000002.jpg"]
    # Its test set, VOC12 test, has no public annotations: the error says so and how to use a local copy.
    with pytest.raises(ResreproError, match="VOC2012 test annotations are not public"):
        load_detection("voc07++12", "test", voc)
    write_voc(voc / "VOCdevkit", "VOC2012", "test", {"2008_000001": []})  # the public test tar: no objects
    with pytest.raises(ResreproError, match="no objects annotated.*not public"):
        load_detection("voc07++12", "test", voc)
    write_voc(voc / "VOCdevkit", "VOC2012", "test", {"2008_000003": [("cat", 1, 1, 5, 5, 0)]})
    assert len(load_detection("voc07++12", "test", voc)) == 2


def xml_of(voc: Path, voc_id: str = "000005") -> Path:
    return voc / "VOCdevkit" / "VOC2007" / "Annotations" / f"{voc_id}.xml"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda voc: None, r"no VOCdevkit folder in .*nowhere"),
        (lambda voc: shutil.rmtree(xml_of(voc).parent),
         r"missing .*VOC2007/Annotations; expected PASCAL VOC as"),
        (lambda voc: xml_of(voc).unlink(), r"image 000005 is listed in .*VOC2007/ImageSets but has no annotation"),
        (lambda voc: (voc / "VOCdevkit/VOC2012/JPEGImages/2008_000002.jpg").unlink(),
         r"image 2008_000002 is listed in .*VOC2012/ImageSets but .*2008_000002.jpg does not exist"),
        (lambda voc: xml_of(voc).write_text(xml_of(voc).read_text().replace(">64</xmax", ">65</xmax")),
         r"000005.xml \(xmin, ymin, xmax, ymax\): box \[30.0, 5.0, 65.0, 48.0\] lies outside its 64×48 image"),
        (lambda voc: xml_of(voc).write_text(xml_of(voc).read_text().replace("<xmin>1<", "<xmin>11<")),
         r"000005.xml \(xmin, ymin, xmax, ymax\): box \[11.0, 1.0, 10.0, 20.0\] has zero area"),
        (lambda voc: xml_of(voc).write_text(xml_of(voc).read_text().replace(">dog<", ">dragon<")),
         r"000005.xml: unknown class 'dragon'"),
        (lambda voc: xml_of(voc).write_text("<annotation><size>"), r"000005.xml is not a VOC annotation"),
        (lambda voc: (voc / "VOCdevkit/VOC2012/ImageSets/Main/trainval.txt").write_text("\n"),
         r"image set .*VOC2012/ImageSets/Main/trainval.txt lists no images"),
    ],
)  # fmt: skip
def test_each_bad_voc_input_is_one_clear_error(voc, damage, message):
    damage(voc)
    root = voc / "nowhere" if "nowhere" in message else voc
    with pytest.raises(ResreproError, match=message):
        load_detection("voc07+12", "train", root)


def test_an_unreadable_image_is_skipped_and_counted(voc):
    (voc / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000005.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    train = load_detection("voc07+12", "train", voc)
    image, target = train[0]
    assert image is None and target["labels"].tolist() == [CAT, DOG] and train.skipped == 1
    # Through a worker process, the count reaches the main process; the batch leaves the bad image out.
    batches = list(DataLoader(train, batch_size=2, num_workers=1, collate_fn=detection_collate))
    assert train.skipped == 2
    (images, targets), = batches  # fmt: skip
    assert len(images) == 1 and targets[0]["labels"].tolist() == [PERSON]
    assert detection_collate([(None, target)]) is None


def write_coco(path: Path, images: list[dict], annotations: list[dict], categories=None) -> Path:
    categories = categories or [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 90, "name": "toothbrush"}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    for info in images:
        write_image(path.parent.parent / "train2014" / info["file_name"], info["width"], info["height"])
    return path


def box(ann_id: int, image_id: int, category: int, bbox: list, crowd: int = 0) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category, "bbox": bbox, "iscrowd": crowd,
            "area": bbox[2] * bbox[3]}  # fmt: skip


@pytest.fixture
def coco(tmp_path) -> Path:
    images = [{"id": 42, "file_name": "a.jpg", "width": 64, "height": 48},
              {"id": 7, "file_name": "b.jpg", "width": 32, "height": 32}]  # fmt: skip
    annotations = [
        box(1, 42, 3, [10.5, 4, 20, 30]),
        box(2, 42, 90, [0, 0, 64, 48]),
        box(3, 42, 1, [30, 10, 20, 20], crowd=1),
        box(4, 7, 1, [5, 5, 0, 10]),  # zero width, like two boxes of the official train2017 file
        box(5, 42, 1, [40, 40, 24.4, 8.3]),  # past the right and bottom border by a rounding error
    ]
    write_coco(tmp_path / "annotations" / "instances_train2014.json", images, annotations)
    return tmp_path


def test_coco_json_becomes_labels_1_to_c_and_xyxy_without_crowds(coco):
    train = load_detection("coco", "train", coco)
    assert train.classes == ("person", "car", "toothbrush") and train.category_ids == (1, 3, 90)
    # Image 7 has only a degenerate box, so training drops it; the crowd region is no target.
    assert len(train) == 1
    image, target = train[0]
    assert image.shape == (3, 48, 64) and target["image_id"] == 42
    assert target["boxes"].tolist() == [[10.5, 4, 30.5, 34], [0, 0, 64, 48], [40, 40, 64, 48]]
    assert target["labels"].tolist() == [2, 3, 1] and not target["difficult"].any()
    # The evaluation sees the file itself, crowd region included.
    gt = train.coco_ground_truth()
    assert sorted(gt.anns) == [1, 2, 3, 4, 5] and gt.anns[3]["iscrowd"] == 1
    test = read_coco(coco / "annotations" / "instances_train2014.json", coco / "train2014", "t", train=False)
    assert [r.image_id for r in test.records] == [7, 42] and len(test.records[0].labels) == 0


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["annotations"].append(box(9, 42, 3, [50, 10, 20, 10])),
         r"\(image 42\) \(x, y, w, h\): box \[50.0, 10.0, 20.0, 10.0\] lies outside its 64×48 image"),
        (lambda d: d["annotations"].append(box(9, 42, 3, [5, 5, -3, 10])), r"negative width or height"),
        (lambda d: d["annotations"].append(box(9, 42, 4, [5, 5, 3, 10])), r"annotation 9 has unknown category 4"),
        (lambda d: d["annotations"].append(box(9, 41, 3, [5, 5, 3, 10])), r"annotation 9 refers to unknown image"),
        (lambda d: d.update(images=[]), r"instances_train2014.json lists no images"),
        (lambda d: d.pop("categories"), r"has no categories list"),
        (lambda d: d["images"][0].update(file_name="missing.jpg"), r"image file .*train2014/missing.jpg does not"),
    ],
)  # fmt: skip
def test_each_bad_coco_input_is_one_clear_error(coco, edit, message):
    path = coco / "annotations" / "instances_train2014.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ResreproError, match=message):
        load_detection("coco", "train", coco)


def test_missing_coco_files_name_where_they_must_be(coco):
    with pytest.raises(ResreproError, match=r"annotations/instances_val2014.json.*expected COCO as"):
        load_detection("coco", "test", coco)
    (coco / "annotations" / "instances_train2014.json").write_text("{not json")
    with pytest.raises(ResreproError, match="cannot read .*instances_train2014.json as JSON"):
        load_detection("coco", "train", coco)
    with pytest.raises(ResreproError, match="needs a data directory"):
        load_detection("coco", "train", None)
    with pytest.raises(ResreproError, match="unknown detection dataset 'voc2007'"):
        load_detection("voc2007", "train", coco)
    with pytest.raises(ResreproError, match="unknown split 'val'"):
        load_detection("coco", "val", coco)


def test_hflip_mirrors_image_and_boxes():
    image = torch.arange(2 * 3 * 5, dtype=torch.uint8).reshape(2, 3, 5)[:1].expand(3, -1, -1)
    target = {"boxes": torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.5, 1.0, 5.0, 2.0]]), "labels": torch.tensor([1, 2])}
    flipped, flipped_target = hflip(image, target)
    assert torch.equal(flipped, image.flip(-1))
    # x1' = W - x2, x2' = W - x1 with W = 5.
    assert flipped_target["boxes"].tolist() == [[3.0, 0.0, 5.0, 3.0], [0.0, 1.0, 3.5, 2.0]]
    assert flipped_target["labels"] is target["labels"] and target["boxes"][0, 0] == 0  # the input is untouched
    back, back_target = hflip(flipped, flipped_target)
    assert torch.equal(back, image) and torch.equal(back_target["boxes"], target["boxes"])


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return digits_detection(tmp_path_factory.mktemp("cache") / "digits-detection")


def test_the_digits_set_is_readable_by_both_readers_and_boxes_lie_inside(digits):
    for split in ("train", "test"):
        voc = load_detection("digits-voc", split, digits)
        coco = load_detection("digits-coco", split, digits)
        assert voc.classes == coco.classes == DIGIT_CLASSES
        by_id = {r.image_id: r for r in coco.records}
        objects = difficult = 0
        for i, r in enumerate(voc.records):
            assert CANVAS[0] <= r.width <= CANVAS[1] and CANVAS[0] <= r.height <= CANVAS[1]
            assert (r.boxes[:, :2] >= 0).all() and (r.boxes[:, 2:] <= [r.width, r.height]).all()
            objects, difficult = objects + len(r.labels), difficult + int(r.difficult.sum())
            # COCO marks the difficult digits as crowd regions, no training targets: the rest are the same boxes.
            if (c := by_id.get(i + 1)) is not None:
                easy = ~r.difficult
                assert np.array_equal(c.boxes, r.boxes[easy]) and np.array_equal(c.labels, r.labels[easy])
            else:  # only a training image whose every digit is difficult has nothing left to train on
                assert split == "train" and r.difficult.all()
        assert objects >= 2 * len(voc) and 0.05 < difficult / objects < 0.25
        assert set(np.concatenate([r.labels for r in voc.records]).tolist()) == set(range(1, 11))
    image, target = load_detection("digits-voc", "test", digits)[0]
    assert image.shape[0] == 3 and image.shape[1:] == (voc.records[0].height, voc.records[0].width)


def test_the_digits_set_is_the_same_files_every_time(digits, tmp_path):
    again = digits_detection(tmp_path / "again")
    files = sorted(p.relative_to(digits) for p in digits.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((digits / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert (digits / COCO_FILES["train"]).is_file() and (digits / VOC_DIR / "ImageSets/Main/test.txt").is_file()
    assert digits_detection(digits) == digits  # kept, not rebuilt
