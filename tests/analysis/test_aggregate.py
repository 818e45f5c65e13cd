"""Run directories -> pandas: finding runs, skipping damaged and foreign folders, mean ± std over seeds."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import pytest

from resrepro.analysis.aggregate import find_runs, runs_frame, summarise
from resrepro.errors import ResreproError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs"


def final_error(run: str) -> float:
    """A fixture run's final test error in percent, read from its summary.json (so tests follow the files)."""
    return 100 * json.loads((FIXTURES / run / "summary.json").read_text())["final"]["eval_error"]


def test_finds_runs_and_skips_damaged_and_foreign_folders_with_a_warning():
    runs, warnings = find_runs(FIXTURES)
    paths = {r.path.relative_to(FIXTURES).as_posix() for r in runs}
    assert "cifar10/full/resnet20-s0" in paths and "imagenet/tiny/resnet34-A-s0" in paths
    assert not any(p.startswith("broken/") for p in paths)
    skipped = [w for w in warnings if w.startswith("skipped")]
    assert len(skipped) == 2
    assert any("bad-json" in w and "not valid JSON" in w for w in skipped)
    assert any("foreign" in w and "not a resrepro run" in w for w in skipped)


def test_runs_frame_has_percent_errors_canonical_names_and_unfinished_runs():
    df, _ = runs_frame(FIXTURES)
    by_path = df.set_index(df["path"].map(lambda p: Path(p).relative_to(FIXTURES).as_posix()))
    assert by_path.loc["cifar10/full/resnet20-s0", "eval_error"] == pytest.approx(
        final_error("cifar10/full/resnet20-s0"))
    assert by_path.loc["cifar10/full/resnet32-A-s0", "model"] == "resnet32"  # one net, one name
    r56 = by_path.loc["cifar10/full/resnet56-s0"]
    assert not r56["finished"] and r56["iter"] == 32000 and math.isnan(r56["eval_error"])
    imagenet = by_path.loc["imagenet/tiny/resnet34-A-s0"]
    assert imagenet["ten_crop_top1"] == pytest.approx(26.01)
    assert imagenet["center_top5"] == pytest.approx(9.01)


def test_summarise_mean_std_best_n_over_finished_runs_only():
    df, _ = runs_frame(FIXTURES)
    s = summarise(df).set_index(["model", "dataset"])
    r20 = [final_error(f"cifar10/full/resnet20-s{i}") for i in range(3)]
    row = s.loc[("resnet20", "cifar10")]
    assert row["mean"] == pytest.approx(statistics.mean(r20))
    assert row["std"] == pytest.approx(statistics.stdev(r20))  # ddof=1, as papers report seeds
    assert row["best"] == pytest.approx(min(r20)) and row["n"] == 3
    assert math.isnan(s.loc[("resnet32", "cifar10"), "std"])  # one run: no spread
    assert ("resnet56", "cifar10") not in s.index  # unfinished
    assert s.loc[("resnet20", "digits"), "n"] == 1


def test_summarise_of_no_runs_is_an_empty_frame():
    df, _ = runs_frame(FIXTURES / "broken")
    assert df.empty
    assert list(summarise(df).columns) == ["model", "dataset", "mean", "std", "best", "n"]


def test_a_damaged_summary_or_eval_file_is_a_warning_not_a_crash(tmp_path):
    shutil.copytree(FIXTURES / "cifar10/full/resnet20-s0", tmp_path / "bad-summary")
    (tmp_path / "bad-summary/summary.json").write_text("{")
    shutil.copytree(FIXTURES / "imagenet/tiny/resnet34-A-s0", tmp_path / "bad-eval")
    (tmp_path / "bad-eval/eval/ten-crop.json").write_text("")
    df, warnings = runs_frame(tmp_path)
    assert list(df["model"]) == ["resnet34-A"]
    assert "ten_crop_top1" not in df and df.loc[0, "center_top1"] == pytest.approx(27.12)
    assert any("bad-summary" in w for w in warnings) and any("ten-crop.json" in w for w in warnings)


def test_a_missing_runs_directory_is_a_user_error(tmp_path):
    with pytest.raises(ResreproError, match="does not exist"):
        find_runs(tmp_path / "nowhere")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ResreproError, match="runs directory .*a-file is a file"):
        find_runs(tmp_path / "a-file")


def test_a_run_whose_config_holds_a_damaged_setting_is_skipped_naming_it(tmp_path):
    shutil.copytree(FIXTURES / "cifar10/tiny/resnet20-s0", tmp_path / "damaged")
    config = json.loads((tmp_path / "damaged/config.json").read_text())
    (tmp_path / "damaged/config.json").write_text(json.dumps({**config, "iters": "abc"}))
    runs, warnings = find_runs(tmp_path)
    assert runs == [] and warnings == [f"skipped {tmp_path / 'damaged'}: config.json: iters should be an integer, "
                                       "got 'abc': the run directory is damaged"]
