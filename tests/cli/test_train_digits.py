"""`resrepro train cifar --dataset digits`: the tiny scale's recipe where nothing is asked, said in one line, and
the final line's training error the eval-mode one the paper's claims are about."""

from __future__ import annotations

import json

from resrepro.experiments import group_settings
from resrepro.train.rundir import RunDir
from tests.inprocess import in_process_cli


def test_digits_take_the_tiny_recipe_and_say_so(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, stdout, err = in_process_cli(monkeypatch, capsys, "train", "cifar", "--n", "1", "--dataset", "digits",
                                       "--iters", "4", "--out", str(out))
    assert code == 0, err
    config = RunDir(out).read_config()
    tiny = group_settings("cifar10", "tiny")
    assert {k: config[k] for k in ("width", "batch_size", "eval_every", "augment", "milestones")} == {
        k: tiny[k] for k in ("width", "batch_size", "eval_every", "augment", "milestones")}
    err = " ".join(err.split())
    assert "digits: the tiny scale's recipe (the cifar10 group's [scale.tiny]) where you set nothing: batch 64, " \
           "width 8, evaluation every 50, augmentation off, lr drops at 300,450" in err
    final = json.loads(stdout)
    assert f"done: training error (eval mode) {100 * final['train_eval_error']:.2f}%" in err


def test_what_is_asked_wins_over_the_tiny_recipe(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, _, err = in_process_cli(monkeypatch, capsys, "train", "cifar", "--n", "1", "--dataset", "digits",
                                  "--iters", "4", "--width", "4", "--augment", "--out", str(out))
    assert code == 0, err
    config = RunDir(out).read_config()
    assert (config["width"], config["augment"], config["batch_size"]) == (4, True, 64)
    assert "width 8" not in err and "augmentation" not in err
