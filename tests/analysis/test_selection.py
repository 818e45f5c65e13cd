"""Which runs a report shows: one dataset, one setting per model, copies once, runtime fields ignored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from resrepro.analysis.aggregate import find_runs
from resrepro.analysis.selection import select_runs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs"


def edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, **changes}))


def test_select_runs_prefers_the_paper_dataset_and_counts_a_copied_run_once(tmp_path):
    shutil.copytree(FIXTURES / "cifar10", tmp_path / "cifar10")
    shutil.copytree(tmp_path / "cifar10/full/resnet110-s0", tmp_path / "copy/resnet110-s0")
    runs, _ = find_runs(tmp_path)
    chosen = select_runs(runs, {"resnet20", "resnet110"}, preferred_dataset="cifar10", split="test")
    assert chosen.dataset == "cifar10"
    assert sorted((m, len(r)) for m, r in chosen.runs.items()) == [("resnet110", 2), ("resnet20", 3)]
    assert any("several datasets" in w for w in chosen.warnings)
    assert any("counted once" in w and "copy" in w for w in chosen.warnings)
    chosen = select_runs(runs, {"resnet20"}, dataset="digits")
    assert chosen.dataset == "digits" and len(chosen.runs["resnet20"]) == 1


def test_select_runs_counts_one_setting_per_model(tmp_path):
    shutil.copytree(FIXTURES / "cifar10/full/resnet20-s0", tmp_path / "a")
    shutil.copytree(FIXTURES / "cifar10/full/resnet20-s1", tmp_path / "b")
    edit_config(tmp_path / "b", iters=1000, config_hash="other")
    runs, _ = find_runs(tmp_path)
    chosen = select_runs(runs, {"resnet20"})
    assert [r.config["iters"] for r in chosen.runs["resnet20"]] == [64000]  # the longest-trained, never a mix
    assert any("another setting not counted" in w for w in chosen.warnings)


@pytest.mark.parametrize(("fixture", "model", "runtime"), [
    ("cifar10/full/resnet20-s0", "resnet20", {"eval_batch_size": 500, "device": "cuda", "verify": False}),
    ("imagenet/tiny/resnet34-A-s0", "resnet34-A", {"workers": 4, "device": "cuda"}),
])
def test_seeds_differing_only_in_runtime_fields_are_one_setting(tmp_path, fixture, model, runtime):
    # where or how fast a run was computed (its family's runtime fields) is not what it computed
    shutil.copytree(FIXTURES / fixture, tmp_path / "a")
    shutil.copytree(FIXTURES / fixture, tmp_path / "b")
    edit_config(tmp_path / "b", seed=1, config_hash="b", **runtime)
    runs, _ = find_runs(tmp_path)
    chosen = select_runs(runs, {model})
    assert [r.path.name for r in chosen.runs[model]] == ["a", "b"] and chosen.warnings == []
    edit_config(tmp_path / "b", lr=0.05)  # what it computes: another experiment
    chosen = select_runs(find_runs(tmp_path)[0], {model})
    assert len(chosen.runs[model]) == 1 and "2 different settings" in chosen.warnings[0]
