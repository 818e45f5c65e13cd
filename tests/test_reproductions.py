"""The paper's qualitative claims, reproduced at the tiny scale by real training runs (slow; CI runs them).

`resrepro sweep fig7 --scale tiny`, the command a user runs, trains plain-20/56 and ResNet-20/56/110 on the UCI
digits (seed 0) and renders Fig. 7; a second sweep adds seeds 1 and 2 of the three nets the degradation claims
are about. Training is chaotic: another CPU (Intel vs AMD kernels) changes the last bit and, after a few hundred
steps, the outcome — plain-56's final training error ranged 32.5–64.0% over five seeds on an Intel Xeon, and
20.2–60.5% over five seeds on an AMD EPYC (16.3% for seed 0 on another EPYC). So the claims are asserted on the
median of three seeds, with margins below the smallest value any machine has shown, not on one seed's digits.
Those ranges are in results/README.md, with the commands that measured them.
"""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

RUNS = Path("runs/cifar10/tiny")
SEEDS = (0, 1, 2)
# The runs the degradation claims need beyond fig7's seed 0, sharing fig7's runs through their group.
MORE_SEEDS = """title = "Seeds 1 and 2 of the nets of the degradation claims"
group = "cifar10"

[[runs]]
models = ["plain20", "plain56", "resnet56"]
seeds = [1, 2]
"""
# Degradation margin, in training error: every plain-56 run seen on any machine ended above 16%, plain-20 at 0.0%,
# so a median of three seeds 10 points apart leaves room for two unlucky seeds below the lowest seen.
MARGIN = 0.10


def resrepro(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resrepro", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=1800)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    r = resrepro("sweep", "fig7", "--scale", "tiny", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "0 finished before, 5 trained, 0 failed" in r.stderr
    (root / "more_seeds.toml").write_text(MORE_SEEDS)
    r = resrepro("sweep", "more_seeds.toml", "--scale", "tiny", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "0 finished before, 6 trained, 0 failed" in r.stderr
    return root


def final(root: Path, model: str, seed: int = 0) -> dict:
    return json.loads((root / RUNS / f"{model}-s{seed}" / "summary.json").read_text())["final"]


def training_error(root: Path, model: str) -> float:
    """The median over SEEDS of the final iterate's error on the whole training set in eval mode (the curves'
    last point is a running mean over mini-batches; this is the number the claims are about)."""
    return statistics.median(final(root, model, seed)["train_eval_error"] for seed in SEEDS)


def test_degradation_the_deeper_plain_net_has_higher_training_error(tiny: Path) -> None:
    # Fig. 1 / Fig. 6 left: plain-20 reaches 0.0% in every seed on every machine seen, plain-56 does not.
    assert training_error(tiny, "plain56") > training_error(tiny, "plain20") + MARGIN


def test_residual_learning_cures_it_at_the_same_depth(tiny: Path) -> None:
    # Fig. 6 middle vs left: ResNet-56 trains where plain-56 does not (0.0% in every seed seen), and the
    # 110-layer ResNet still trains (0.0-0.4% over five Xeon seeds).
    assert training_error(tiny, "resnet56") < training_error(tiny, "plain56") - MARGIN
    assert training_error(tiny, "resnet56") <= training_error(tiny, "plain20") + 0.01
    assert final(tiny, "resnet110")["train_eval_error"] < 0.03


def test_residual_responses_are_smaller_than_plain_ones(tiny: Path) -> None:
    # Fig. 7: the residual functions respond less than the plain layers of a net of the same depth. Mean std per
    # net over five seeds: ResNet-20 0.976-0.991 vs plain-20 1.006-1.026 on a Xeon (BN's γ moves little in 600
    # iterations, so the margin is small but held in every seed on both machines); ResNet-56 0.946-0.973 vs
    # plain-56 2.07-4.36.
    responses = pd.read_csv(tiny / "results/fig7/tiny/fig7_responses.csv")
    mean_std = responses.groupby("model")["std"].mean()
    assert set(mean_std.index) == {"plain20", "plain56", "resnet20", "resnet56", "resnet110"}
    assert responses.groupby("model")["layer"].max().to_dict() == {
        "plain20": 19, "plain56": 55, "resnet20": 19, "resnet56": 55, "resnet110": 109}  # 6n+1 with the stem
    assert mean_std["resnet20"] < mean_std["plain20"]
    assert mean_std["resnet56"] < mean_std["plain56"]
    for suffix in ("png", "pdf", "md"):
        assert (tiny / f"results/fig7/tiny/fig7.{suffix}").stat().st_size > 0


def test_fig1_from_the_same_runs_trains_nothing_and_renders(tiny: Path) -> None:
    r = resrepro("sweep", "fig1", "--scale", "tiny", cwd=tiny)
    assert r.returncode == 0, r.stderr
    assert "2 finished before, 0 trained, 0 failed" in r.stderr
    caption = (tiny / "results/fig1/tiny/fig1.md").read_text()
    for model in ("plain20", "plain56"):  # each curve is the mean of the seeds there are: 0, 1 and 2
        mean = statistics.mean(100 * final(tiny, model, seed)["eval_error"] for seed in SEEDS)
        assert f"{mean:.2f}" in caption and "0, 1, 2" in caption
    assert (tiny / "results/fig1/tiny/fig1.png").stat().st_size > 0


def test_fig6_renders_what_exists_and_names_what_is_missing(tiny: Path) -> None:
    r = resrepro("figure", "fig6", "--runs", str(RUNS), "--out", "fig6", cwd=tiny)
    assert r.returncode == 0, r.stderr
    assert "plain32" in r.stderr and "resnet1202" in r.stderr  # never trained here: named, not invented
    assert {p.suffix for p in (tiny / "fig6").iterdir()} >= {".png", ".pdf", ".md"}


def test_table6_shows_our_tiny_runs_beside_the_paper(tiny: Path) -> None:
    r = resrepro("table", "table6", "--runs", str(RUNS), "--format", "csv", cwd=tiny)
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(io.StringIO(r.stdout)).set_index("model")
    for model, n in (("resnet20", 1), ("resnet56", 3), ("resnet110", 1)):
        seeds = [100 * final(tiny, model, s)["eval_error"] for s in range(n)]
        assert table.loc[model, "ours_mean"] == pytest.approx(sum(seeds) / n, abs=1e-3)
        assert table.loc[model, "n"] == n
    assert table.loc["resnet110", "paper"] == 6.43 and pd.isna(table.loc["resnet32", "ours_mean"])
