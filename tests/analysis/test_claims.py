"""The paper's claims decided on runs: medians over seeds, margins, ranges, the best of several nets, and too
few runs; and the claims as the experiment files state them."""

from __future__ import annotations

import pandas as pd
import pytest

from resrepro.analysis.claims import FAILS, HOLDS, TOO_FEW, judge, verdict_frame
from resrepro.errors import ResreproError
from resrepro.experiments import load_experiment
from resrepro.paper import Claim


def runs(**medians: list[float]) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "train_eval_error": v, "voc07_map": v} for m, vs in medians.items()
                         for v in vs])


DEGRADATION = Claim("degradation", "plain-56 trains worse", "train_eval_error", "plain56", ">", ("plain20",),
                    margin=10.0, seeds=3)


def test_a_claim_is_decided_on_the_median_not_the_mean():
    # plain-56's mean (26.0) clears plain-20 + 10 points; its median (8.0) does not
    v = judge([DEGRADATION], runs(plain56=[8.0, 4.0, 66.0], plain20=[0.0, 0.0, 1.0]))[0]
    assert v.verdict == FAILS and v.medians == {"plain56": 8.0, "plain20": 0.0}
    assert v.numbers == "plain56 8.00 (3 runs) > plain20 0.00 (3 runs) + 10.00"
    v = judge([DEGRADATION], runs(plain56=[32.0, 40.0, 20.0], plain20=[0.0, 0.0, 1.0]))[0]
    assert v.verdict == HOLDS


def test_too_few_seeds_leave_a_claim_undecided_and_say_which_net():
    v = judge([DEGRADATION], runs(plain56=[60.0, 50.0], plain20=[0.0, 0.0, 0.0]))[0]
    assert v.verdict == TOO_FEW
    assert v.numbers == "plain56 has 2 finished runs with train_eval_error, 3 needed"
    # a run without the metric (NaN) does not count
    frame = runs(plain56=[60.0, 50.0, 40.0], plain20=[0.0, 0.0, 0.0])
    frame.loc[0, "train_eval_error"] = float("nan")
    assert judge([DEGRADATION], frame)[0].verdict == TOO_FEW


def test_a_negative_margin_is_a_tolerance_and_spellings_of_a_net_are_one():
    claim = Claim("deep-as-shallow", "", "train_eval_error", "resnet56-A", "<=", ("plain20",), margin=-1.0)
    v = judge([claim], runs(resnet56=[0.8], plain20=[0.0]))[0]
    assert v.verdict == HOLDS and v.numbers == "resnet56-A 0.80 (1 run) <= plain20 0.00 (1 run) + 1.00"
    assert judge([claim], runs(resnet56=[1.2], plain20=[0.0]))[0].verdict == FAILS


def test_within_a_range_and_the_best_of_several_nets():
    within = Claim("as-printed", "", "train_eval_error", "resnet110", low=6.45, high=6.77, seeds=5)
    assert judge([within], runs(resnet110=[6.2, 6.5, 6.6, 7.0, 9.0]))[0].verdict == HOLDS
    assert judge([within], runs(resnet110=[6.2, 6.3, 6.4, 7.0, 9.0]))[0].verdict == FAILS
    ensemble = Claim("ensemble", "", "train_eval_error", "resnet-ensemble", "<=", ("resnet50", "resnet152"))
    v = judge([ensemble], runs(**{"resnet-ensemble": [18.0], "resnet50": [29.0], "resnet152": [17.0]}))[0]
    assert v.verdict == FAILS and v.best == "resnet152"
    assert v.numbers.endswith("the best of resnet50 29.00 (1 run), resnet152 17.00 (1 run): resnet152")
    # mAP is a score: its best net is the highest
    score = Claim("map", "", "voc07_map", "resnet101", ">", ("vgg16", "vgg16-bn"))
    v = judge([score], runs(resnet101=[5.0], vgg16=[2.0], **{"vgg16-bn": [6.0]}))[0]
    assert v.verdict == FAILS and v.best == "vgg16-bn"
    frame = verdict_frame([v]).iloc[0]
    assert (frame["right_median"], frame["right_runs"], frame["op"]) == (6.0, 1, ">")


def test_experiment_files_state_the_claims_per_scale():
    tiny, full = load_experiment("fig6", "tiny"), load_experiment("fig6", "full")
    cure = {c.id: c for c in tiny.claims}["residual-cures"]
    assert (cure.left, cure.op, cure.right, cure.margin, cure.seeds) == ("resnet56", "<", ("plain56",), 10.0, 3)
    full_cure = {c.id: c for c in full.claims}["residual-cures"]
    assert (full_cure.margin, full_cure.seeds) == (0.0, 1)
    assert "resnet110-trains" in {c.id for c in tiny.claims} - {c.id for c in full.claims}
    assert "resnet1202-overfits" in {c.id for c in full.claims} - {c.id for c in tiny.claims}


@pytest.mark.parametrize("claim, message", [
    ('compare = ["plain56", "=>", "plain20"]', r"bad\.toml \(line 6\): \[\[claims\]\] block 1: compare should read"),
    ('within = ["resnet110", 7, 6]', r"within should read \[NET, LOW, HIGH\]"),
    ('compare = ["plain56", ">", "plain20"]\nmargin = { huge = 1.0 }', r"margin names unknown scale 'huge'"),
    ('compare = ["plain56", ">", "plain20"]\nwithin = ["plain56", 0, 1]', r"needs one of compare"),
    ('compare = ["plain56", ">", "plain20"]\nsees = 3', r"unknown key 'sees'.*did you mean 'seeds'"),
])
def test_a_malformed_claim_is_one_line_naming_the_file(tmp_path, monkeypatch, claim, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text('title = "x"\n[[runs]]\nmodels = ["plain20"]\n[[claims]]\nid = "a"\n'
                                       + claim.replace("\n", '\nsays = "s"\nmetric = "eval_error"\n', 1)
                                       + ('\nsays = "s"\nmetric = "eval_error"\n' if "\n" not in claim else "\n"))
    with pytest.raises(ResreproError, match=message):
        load_experiment("bad.toml")
