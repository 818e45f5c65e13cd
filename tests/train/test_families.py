"""The family registry: a new family is one recipe (here, a few lines in this file) and one ``register`` call; the
one loop trains and resumes it, the one evaluation evaluates it and the one run selection tables it. And no code
outside the registry and the recipes asks which family a spec is."""

from __future__ import annotations

import ast
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

import resrepro
from resrepro.analysis.aggregate import runs_frame, summarise
from resrepro.data.pipeline import BatchStream, ImageSet, eval_batches, normalizer
from resrepro.models.registry import resolve
from resrepro.train import families
from resrepro.train.checkpoint import load_checkpoint
from resrepro.train.evaluate import evaluate_run
from resrepro.train.loop import train
from resrepro.train.metrics import Tally
from resrepro.train.recipe import Family, Recipe
from resrepro.train.rundir import RunDir
from resrepro.train.runtime import use_cudnn_benchmark
from resrepro.train.schedule import Schedule
from resrepro.train.spec import RunSpec, spec_from_config
from tests.train.killed import train_until_killed


# --- the toy family: another dataset (8x8 stripes, horizontal or vertical) through the classification loss -----
@dataclass(frozen=True, kw_only=True)
class StripesSpec(RunSpec):
    family: ClassVar[str] = "stripes"
    model: str = "resnet8"
    dataset: str = "stripes"
    iters: int = 16
    batch_size: int = 16
    milestones: tuple[int, ...] = (12,)
    width: int = 4
    eval_every: int = 4
    checkpoint_every: int = 4


def stripes(n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    labels, where = torch.randint(0, 2, (n,), generator=g), torch.randint(0, 8, (n,), generator=g)
    images = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    for i in range(n):
        images[i, 0, where[i], :] = 255 if labels[i] else 0
        images[i, 0, :, where[i]] = 0 if labels[i] else 255
    return ImageSet(images, labels, 2, "stripes")


TRAIN, TEST = stripes(128, 0), stripes(64, 1)
MEAN, STD = normalizer(TRAIN, "pixel-mean")


def build(spec: StripesSpec, state: dict[str, Any] | None = None) -> torch.nn.Module:
    return resolve(spec.model).build(width=spec.width, num_classes=2, in_channels=1)


@torch.no_grad()
def held_out_error(model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    was_training, tally = model.training, Tally(device, top5=False)
    model.eval()
    for x, y in eval_batches(TEST, 32, device=device, mean=MEAN, std=STD):
        tally.add_logits(model(x), y)
    model.train(was_training)
    return tally.result()


def stripes_recipe(spec: StripesSpec, device: torch.device, channels_last: bool, rank: int, world: int) -> Recipe:
    def batches(step: int, state: dict[str, Any] | None) -> BatchStream:
        stream = BatchStream(TRAIN, spec.batch_size, device=device, seed=spec.seed, augment=False, mean=MEAN, std=STD)
        if state is not None:
            stream.load_state_dict(state)
        return stream

    return Recipe(build_model=lambda: build(spec), batches=batches,
                  schedule=Schedule(spec.lr, spec.milestones, spec.lr_decay), train_images=len(TRAIN),
                  eval_split="test", evaluate=lambda model: held_out_error(model, device), finish=lambda model: {},
                  model_info={"num_classes": 2, "in_channels": 1})


STRIPES = Family(name="stripes", spec=StripesSpec, recipe=stripes_recipe, build=build,
                 evaluate=lambda spec, model, ask: {"split": "test", **held_out_error(model, ask.device)},
                 image_size=lambda spec: 8)
# --- end of the toy family ---------------------------------------------------------------------------------


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))  # gone again after the test
    families.register(STRIPES)


def test_a_new_family_trains_resumes_evaluates_and_is_tabled(registered, tmp_path):
    spec = StripesSpec()
    full = train(spec, tmp_path / "runs" / "full")

    train_until_killed(spec, tmp_path / "runs" / "cut", at=12)
    assert load_checkpoint(tmp_path / "runs" / "cut")["step"] == 8
    assert train(spec, tmp_path / "runs" / "cut")["final"] == full["final"]  # resumed bit-exactly
    # config.json reads back as the toy's spec, with the layout it trains in (its family's CPU default: NCHW)
    assert RunDir(tmp_path / "runs" / "cut").read_spec() == spec.replace(channels_last=False)

    result = evaluate_run(tmp_path / "runs" / "full", device="cpu")
    assert (result["family"], result["split"]) == ("stripes", "test")
    assert result["top1_error"] == pytest.approx(full["final"]["eval_error"])
    assert result["images"] == len(TEST)

    frame, warnings = runs_frame(tmp_path / "runs")
    assert not warnings
    table = summarise(frame)
    assert table[["model", "dataset", "n"]].values.tolist() == [["resnet8", "stripes", 2]]
    assert table["mean"].item() == pytest.approx(100 * full["final"]["eval_error"])
    assert table["std"].item() == 0


def test_the_registry_answers_for_every_family_and_refuses_an_unknown_one():
    for name in ("cifar", "imagenet", "detection"):
        family = families.family_of(name)
        assert family.spec.family == name and family is families.family_of(spec_from_config(
            {"family": name, **_minimal(name)}))
    assert families.family_of_protocol("ten-crop").name == "imagenet"
    assert families.family_of_protocol("voc07").name == "detection"
    assert families.family_of("detection").evaluations(["center", "voc07", "coco"]) == ("voc07", "coco")
    assert families.family_of("cifar").evaluations(["center"]) == ()  # nothing kept in RUN/eval/ for CIFAR
    with pytest.raises(resrepro.errors.ResreproError, match="unknown run family 'segmentation'"):
        families.family_of("segmentation")
    with pytest.raises(ValueError, match="says family 'cifar'"):
        families.register(Family(name="other", spec=families.family_of("cifar").spec, recipe=stripes_recipe,
                                 build=build, evaluate=STRIPES.evaluate))


def _minimal(name: str) -> dict[str, Any]:
    return {"cifar": {"model": "resnet20"}, "imagenet": {"model": "resnet18"},
            "detection": {"model": "resnet101"}}[name]


def test_no_code_outside_the_registry_and_the_recipes_asks_which_family_a_spec_is():
    package = Path(resrepro.__file__).parent
    train = package / "train"
    allowed = {train / "families.py", train / "spec.py", *(train / "recipes").glob("*.py")}
    found = []
    for path in sorted(package.rglob("*.py")):
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2 \
                    and "Spec" in ast.unparse(node.args[1]) and "ModelSpec" not in ast.unparse(node.args[1]):
                found.append(f"{path.relative_to(package)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, found


def test_every_committed_run_keeps_its_config_hash():
    """Moving the families into a registry changes no run's identity: each committed config.json (CIFAR and
    ImageNet, full and tiny) reads back as its family's spec and hashes as it did when it was written."""
    root = Path(__file__).parents[1] / "fixtures" / "runs"
    checked = 0
    for path in sorted(root.rglob("config.json")):
        if "broken" in path.parts:
            continue
        config = json.loads(path.read_text())
        spec = spec_from_config(config)
        assert families.family_of(spec).spec is type(spec)
        # The hand-written ImageNet fixture records a placeholder; 43cfdbd81c27 is what resrepro computed for it
        # before the registry.
        expected = {"0123456789ab": "43cfdbd81c27"}.get(config["config_hash"], config["config_hash"])
        assert spec.config_hash() == expected, path
        checked += 1
    assert checked == 10  # 8 full and 1 tiny CIFAR-10 runs, 1 tiny ImageNet run


def test_cudnn_benchmark_is_for_fixed_shape_families_on_cuda_only():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert {name: use_cudnn_benchmark(families.family_of(name).fixed_shapes, cuda)
            for name in ("cifar", "imagenet", "detection")} == {"cifar": True, "imagenet": True, "detection": False}
    assert not any(use_cudnn_benchmark(families.family_of(name).fixed_shapes, cpu)
                   for name in ("cifar", "imagenet", "detection"))


@pytest.mark.parametrize("fixed", [True, False])
def test_cudnn_benchmark_is_set_while_training_and_restored_after(registered, tmp_path, monkeypatch, fixed):
    from resrepro.train import loop

    seen = []

    def recipe(*args):
        r = stripes_recipe(*args)
        return dataclasses.replace(r, evaluate=lambda m: (seen.append(torch.backends.cudnn.benchmark),
                                                          r.evaluate(m))[1])

    families._FAMILIES["stripes"] = dataclasses.replace(STRIPES, recipe=recipe, fixed_shapes=fixed)
    # as it would decide on a GPU
    monkeypatch.setattr(loop, "use_cudnn_benchmark", lambda f, device: use_cudnn_benchmark(f, torch.device("cuda")))
    before = torch.backends.cudnn.benchmark
    train(StripesSpec(iters=4, milestones=(2,)), tmp_path / "run")
    assert seen and set(seen) == {fixed} and torch.backends.cudnn.benchmark == before
