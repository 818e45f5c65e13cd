"""The detection family on the one engine: its spec, its backbone sources, exact resume, bad input."""

import json

import pytest
import torch

from resrepro.errors import ResreproError
from resrepro.io import write_json
from resrepro.train.checkpoint import load_checkpoint
from resrepro.train.loop import train
from resrepro.train.recipes.detection import pin_backbone
from resrepro.train.rundir import RunDir
from resrepro.train.spec import CifarSpec, DetectionSpec, ImageNetSpec, spec_from_config
from tests.inprocess import in_process_cli
from tests.train.killed import train_until_killed

# A detector small enough for seconds on a CPU: 8-filter backbone, 64-px images, small anchors.
TINY = dict(model="resnet18", dataset="digits-voc", width=8, min_size=48, max_size=64, anchor_sizes=(16, 32),
            batch_size=2, iters=4, milestones=(3,), eval_every=2, checkpoint_every=2, workers=0, proposals_test=50)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    from resrepro.data.detection.tiny import digits_detection

    return digits_detection(tmp_path_factory.mktemp("data") / "digits-detection")


@pytest.fixture
def detection_data(monkeypatch, digits_dir):
    """The tiny digits set, cut to its first 8 train and 4 test images so that a test trains in seconds."""
    import resrepro.data.detection as data
    from resrepro.data.detection import DetectionSet

    real = data.load_detection

    def first_images(dataset, split, data_dir=None):
        full = real(dataset, split, data_dir)
        return DetectionSet(full.records[:8 if split == "train" else 4], full.classes, full.name)

    monkeypatch.setattr(data, "load_detection", first_images)
    return dict(data_dir=str(digits_dir))


def test_recipe_defaults_follow_the_dataset():
    voc, coco = DetectionSpec(), DetectionSpec(dataset="coco")
    assert (voc.iters, voc.milestones, voc.batch_size) == (80_000, (60_000,), 1)  # Faster R-CNN's VOC recipe
    assert (coco.iters, coco.milestones, coco.batch_size) == (320_000, (240_000,), 8)  # appendix A: 240k + 80k
    assert (voc.lr, voc.momentum, voc.weight_decay, voc.min_size, voc.max_size) == (0.001, 0.9, 5e-4, 600, 1000)
    assert DetectionSpec(iters=10, milestones=[5]).milestones == (5,)
    assert spec_from_config(json.loads(json.dumps(coco.to_dict()))) == coco


def test_weights_location_is_runtime_but_their_identity_is_not():
    a = DetectionSpec(backbone_run="/a/run", backbone_hash="0123456789ab")
    assert a.config_hash() == a.replace(backbone_run="/moved/run").config_hash()
    assert a.config_hash() != a.replace(backbone_hash="ba9876543210").config_hash()
    assert a.config_hash() != DetectionSpec().config_hash()  # from scratch is another run


@pytest.mark.parametrize("bad, message", [
    (dict(model="resnet20"), "not an ImageNet net"),
    (dict(dataset="voc2007"), "unknown dataset"),
    (dict(min_size=1200), "min_size"),
    (dict(backbone_import="torchvision:resnet101"), "go together"),
    (dict(backbone_run="r", backbone_import="torchvision:resnet101", weights="w"), "not both"),
])
def test_spec_refuses_what_cannot_run(bad, message):
    with pytest.raises(ResreproError, match=message):
        DetectionSpec(**bad)


def _fake_run(path, spec, finished=True):
    """A run directory as `resrepro train` leaves it, without training (config, summary, weights)."""
    path.mkdir(parents=True)
    write_json(path / "config.json", {**spec.to_dict(), "config_hash": spec.config_hash()})
    if finished:
        write_json(path / "summary.json", {"status": "finished", "final": {"eval_error": 0.5}})
    return path


def test_backbone_run_of_another_family_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    cifar = _fake_run(tmp_path / "cifar", CifarSpec(model="resnet20"))
    code, out, err = in_process_cli(monkeypatch, capsys, "train", "detection", "--backbone", "resnet18",
                                    "--dataset", "digits-voc", "--backbone-run", str(cifar),
                                    "--out", str(tmp_path / "det"))
    assert code == 2 and "is a cifar run" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "det").exists()


def test_backbone_run_pins_its_hash_and_normalisation_and_must_match_the_net(tmp_path):
    imagenet = ImageNetSpec(model="resnet18", width=8, normalize="mean-std")
    run = _fake_run(tmp_path / "r18", imagenet)
    pinned = pin_backbone(DetectionSpec(model="resnet18", width=8, backbone_run=str(run)))
    assert pinned.backbone_hash == imagenet.config_hash() and pinned.normalize == "mean-std"
    with pytest.raises(ResreproError, match="not the backbone resnet34"):
        pin_backbone(DetectionSpec(model="resnet34", width=8, backbone_run=str(run)))
    with pytest.raises(ResreproError, match="width 8, not the backbone resnet18 at width 16"):
        pin_backbone(DetectionSpec(model="resnet18", width=16, backbone_run=str(run)))
    unfinished = _fake_run(tmp_path / "half", imagenet, finished=False)
    with pytest.raises(ResreproError, match="has not finished"):
        pin_backbone(DetectionSpec(model="resnet18", width=8, backbone_run=str(unfinished)))


@pytest.mark.slow  # ~25 s on an idle 2-core CPU (100 s on a busy one)
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, detection_data):
    spec = DetectionSpec(**TINY, **detection_data)
    full = train(spec, tmp_path / "full")

    cut = spec.replace(checkpoint_every=1)  # runtime: the same run, checkpointed after every step
    # Dies after logging iteration 2, before its checkpoint: resumes from 1, mid-epoch
    train_until_killed(cut, tmp_path / "cut", at=2)
    assert load_checkpoint(tmp_path / "cut")["step"] == 1
    resumed = train(cut, tmp_path / "cut")
    assert resumed["final"] == full["final"]
    assert resumed["final"]["train_error"] is None and resumed["final"]["eval_protocol"] == "voc07"
    rows = [RunDir(tmp_path / d).read_metrics() for d in ("cut", "full")]
    assert [[r[k] for k in ("iter", "lr", "train_loss", "eval_error")] for r in rows[0]] == \
        [[r[k] for k in ("iter", "lr", "train_loss", "eval_error")] for r in rows[1]]
    a, b = load_checkpoint(tmp_path / "full")["model"], load_checkpoint(tmp_path / "cut")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # ~30 s on an idle 2-core CPU
def test_tiny_train_then_eval_then_table7(tmp_path, detection_data, monkeypatch, capsys):
    run = tmp_path / "runs" / "vgg16-s0"
    code, out, err = in_process_cli(
        monkeypatch, capsys, "train", "detection", "--backbone", "vgg16", "--dataset", "digits-voc", "--width", "8",
        "--min-size", "48", "--max-size", "64", "--anchor-sizes", "16,32", "--batch-size", "2", "--iters", "2",
        "--eval-every", "2", "--workers", "0", "--data-dir", detection_data["data_dir"], "--out", str(run))
    assert code == 0, err
    final = json.loads(out)
    assert final["eval_protocol"] == "voc07" and 0 <= final["eval_error"] <= 1
    code, out, err = in_process_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "voc07")
    assert code == 0, err
    saved = json.loads((run / "eval" / "voc07.json").read_text())
    assert saved["map"] == pytest.approx(1 - final["eval_error"])  # the same weights, the same test images
    assert set(saved["ap"]) == set("0123456789") and saved["images"] == 4
    assert f"mAP {100 * saved['map']:.2f}%" in out
    code, out, err = in_process_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "voc12")
    assert code == 0 and (run / "eval" / "voc12.json").exists()
    code, out, err = in_process_cli(monkeypatch, capsys, "table", "table7", "--runs", str(tmp_path / "runs"),
                                    "--format", "csv")
    assert code == 0, err
    import csv
    import io

    rows = {r["model"]: r for r in csv.DictReader(io.StringIO(out))}
    assert float(rows["vgg16"]["ours_mean_voc07"]) == pytest.approx(100 * saved["map"], abs=1e-4)
    assert float(rows["vgg16"]["paper_voc07"]) == 73.2 and float(rows["resnet101"]["paper_voc12"]) == 73.8
    assert rows["vgg16"]["n"] == "1" and rows["resnet101"]["ours_mean_voc07"] == ""


@pytest.mark.slow  # two processes, the 200 test images: ~1 min on an idle 2-core CPU
def test_ddp_under_torchrun_evaluates_as_one_process(tmp_path, digits_dir):
    """Each rank detects every second test image; gathered, the mAP is the one a single process measures."""
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    args = ["train", "detection", "--backbone", "vgg16", "--dataset", "digits-voc", "--width", "8", "--min-size",
            "48", "--max-size", "64", "--anchor-sizes", "16,32", "--batch-size", "2", "--iters", "2", "--eval-every",
            "2", "--workers", "0", "--device", "cpu", "--data-dir", str(digits_dir), "--out", str(run)]
    env = {**os.environ, "COLUMNS": "200"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "resrepro", *args], capture_output=True, text=True, env=env)
    assert ddp.returncode == 0, ddp.stderr
    summary = RunDir(run).read_summary()
    assert summary["world_size"] == 2
    one = subprocess.run([sys.executable, "-m", "resrepro", "eval", str(run), "--format", "json"],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["map"] == pytest.approx(1 - summary["final"]["eval_error"], abs=1e-9)


def test_the_tiny_scales_vgg16_bn_builds_a_detector():
    """vgg16-bn's trunk ends with conv5_3, BN, ReLU: its channels come from the conv, not from features[-3]."""
    from resrepro.models.detection import build_detector

    model = build_detector("vgg16-bn", 2, width=4, min_size=48, max_size=64, anchor_sizes=(16, 32)).eval()
    assert model.backbone.out_channels == 32
    with torch.no_grad():
        assert set(model([torch.rand(3, 48, 64)])[0]) == {"boxes", "scores", "labels"}


def test_bn_learns_only_when_there_are_no_pretrained_statistics_to_freeze():
    from torchvision.ops import FrozenBatchNorm2d

    from resrepro.train.recipes.detection import build_detection_model

    def kinds(spec):
        return {type(m) for m in build_detection_model(spec, 2).modules()} & {torch.nn.BatchNorm2d, FrozenBatchNorm2d}

    scratch = DetectionSpec(model="resnet18", width=4, min_size=48, max_size=64)
    assert kinds(scratch) == {torch.nn.BatchNorm2d}  # frozen at initialisation, BN would be the identity
    pinned = scratch.replace(backbone_run="/r", backbone_hash="0123456789ab")
    assert kinds(pinned) == {FrozenBatchNorm2d}  # appendix A: the ImageNet statistics, fixed


def test_a_torchvision_weights_file_lands_in_the_backbone(tmp_path):
    import torchvision

    from resrepro.train.recipes.detection import _classifier_state

    net = torchvision.models.resnet18(weights=None)
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    spec = pin_backbone(DetectionSpec(model="resnet18", backbone_import="torchvision:resnet18",
                                      weights=str(tmp_path / "resnet18.pth")))
    assert spec.normalize == "mean-std" and spec.backbone_hash is not None
    state = _classifier_state(spec)
    assert torch.equal(state["conv1.weight"], net.conv1.weight.detach())
    with pytest.raises(ResreproError, match="torchvision:vgg16"):  # the name and the backbone disagree
        _classifier_state(spec.replace(backbone_import="torchvision:vgg16"))


def _tiny_detector():
    from resrepro.train.recipes.detection import build_detection_model

    torch.manual_seed(0)
    return build_detection_model(DetectionSpec(**TINY), 11)


def test_test_images_decoded_by_workers_give_the_detections_of_the_main_process(digits_dir):
    from resrepro.data.detection import load_detection
    from resrepro.train.recipes.detection import detect, eval_loader

    test_set = load_detection("digits-voc", "test", digits_dir)
    model = _tiny_detector()
    cpu = torch.device("cpu")
    alone = detect(model, eval_loader(test_set, 0, world=10), cpu)  # every tenth image, in this process
    loader = eval_loader(test_set, 2, world=10)
    for _ in range(2):  # the workers are kept for the next evaluation
        found = detect(model, loader, cpu)
        assert sorted(found) == list(range(0, len(test_set), 10))
        assert all(torch.equal(found[i][k], alone[i][k]) for i in alone for k in ("boxes", "scores", "labels"))
    assert loader._iterator is not None and loader._iterator._workers  # persistent: started once


def _score_two_ranks(rank: int, store: str, digits_dir, out) -> None:
    import torch.distributed as dist

    from resrepro.data.detection import load_detection
    from resrepro.train.recipes import detection

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        test_set = load_detection("digits-voc", "test", digits_dir)
        scored = []
        real = detection.score
        detection.score = lambda *a: scored.append(rank) or real(*a)
        found = detection.detect(_tiny_detector(), detection.eval_loader(test_set, 0, rank, 2), torch.device("cpu"))
        result = detection.score_on_rank_0(found, test_set, "voc07", 2)
        torch.save({"result": result, "scored": scored}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes detecting the 200 test images: ~20 s on an idle 2-core CPU
def test_two_ranks_score_once_on_rank_0_and_agree_with_one_process(tmp_path, digits_dir):
    import torch.multiprocessing as mp

    from resrepro.data.detection import load_detection
    from resrepro.train.recipes.detection import detect, eval_loader, score

    mp.spawn(_score_two_ranks, args=(str(tmp_path / "store"), digits_dir, tmp_path), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["scored"] for r in ranks] == [[0], []]  # rank 1 sent its detections and scored nothing
    test_set = load_detection("digits-voc", "test", digits_dir)
    one = score(detect(_tiny_detector(), eval_loader(test_set, 0), torch.device("cpu")), test_set, "voc07")
    assert ranks[0]["result"] == ranks[1]["result"] and ranks[0]["result"]["map"] == pytest.approx(one["map"])
