"""The paper's qualitative claims, reproduced at the tiny scale by real training runs (slow; CI runs them).

`resrepro sweep fig7 --scale tiny`, the command a user runs, trains plain-20/56 and ResNet-20/56/110 on the UCI
digits (seed 0) and renders Fig. 7; a second sweep adds seeds 1 and 2 of the four nets the degradation claims
and Fig. 7's ResNet-56-below-ResNet-20 claim are about. Training is chaotic: another CPU (Intel vs AMD kernels)
changes the last bit and, after a few hundred steps, the outcome — plain-56's final training error ranged
14.9–50.6% over five seeds on an Intel Xeon (2026-12-06), and 20.2–60.5% over five seeds on an AMD EPYC (16.3% for
seed 0 on another EPYC). So the claims are asserted on the median of three seeds, with margins below the smallest
value any machine has shown, not on one seed's digits.
Those ranges are in results/README.md, with the commands that measured them. The claims, their margins and the
seeds they need are stated once, in experiments/fig1.toml, fig6.toml and fig7.toml: these tests assert the verdicts
`resrepro figure` writes beside each figure (<name>_claims.csv), the ones a reader of the report sees.
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
models = ["plain20", "plain56", "resnet20", "resnet56"]
seeds = [1, 2]
"""
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
    assert "0 finished before, 8 trained, 0 failed" in r.stderr
    return root


def final(root: Path, model: str, seed: int = 0) -> dict:
    return json.loads((root / RUNS / f"{model}-s{seed}" / "summary.json").read_text())["final"]


def claims(root: Path, name: str) -> pd.DataFrame:
    """The verdicts on figure ``name``'s claims, as `resrepro figure` writes them beside it (rendered once)."""
    out = root / name
    if not (out / f"{name}_claims.csv").is_file():
        r = resrepro("figure", name, "--runs", str(RUNS), "--out", name, cwd=root)
        assert r.returncode == 0, r.stderr
    return pd.read_csv(out / f"{name}_claims.csv").set_index("id")


def assert_hold(verdicts: pd.DataFrame, *ids: str) -> None:
    for claim in ids:
        assert verdicts.loc[claim, "verdict"] == "holds", f"{claim}: {verdicts.loc[claim, 'numbers']}"


def test_degradation_the_deeper_plain_net_has_higher_training_error(tiny: Path) -> None:
    # Fig. 1 / Fig. 6 left: plain-20 reaches 0.0% in every seed on every machine seen, plain-56 does not.
    assert_hold(claims(tiny, "fig1"), "degradation")
    assert_hold(claims(tiny, "fig6"), "plain-degrades")
    assert claims(tiny, "fig1").loc["degradation", "left_runs"] == len(SEEDS)  # the median of three seeds


def test_residual_learning_cures_it_at_the_same_depth(tiny: Path) -> None:
    # Fig. 6 middle vs left: ResNet-56 trains where plain-56 does not, and the 110-layer ResNet still trains.
    assert_hold(claims(tiny, "fig6"), "residual-cures", "residual-deep-as-shallow", "resnet110-trains")


def test_residual_responses_are_smaller_than_plain_ones(tiny: Path) -> None:
    # Fig. 7: the residual functions respond less than the plain layers of a net of the same depth, as decided
    # when the sweep rendered it.
    responses = pd.read_csv(tiny / "results/fig7/tiny/fig7_responses.csv")
    assert set(responses["model"]) == {"plain20", "plain56", "resnet20", "resnet56", "resnet110"}
    assert responses.groupby("model")["layer"].max().to_dict() == {
        "plain20": 19, "plain56": 55, "resnet20": 19, "resnet56": 55, "resnet110": 109}  # 6n+1 with the stem
    assert_hold(pd.read_csv(tiny / "results/fig7/tiny/fig7_claims.csv").set_index("id"),
                "residual-smaller-20", "residual-smaller-56")
    # ResNet-56 below ResNet-20 needs three seeds of each: decided on the figure drawn from all the runs
    assert_hold(claims(tiny, "fig7"), "deeper-smaller-56")
    assert claims(tiny, "fig7").loc["deeper-smaller-56", "left_runs"] == len(SEEDS)
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
    assert {p.suffix for p in (tiny / "fig6").iterdir()} >= {".png", ".pdf", ".md", ".csv"}
    assert "claim holds: ResNet-56 trains where plain-56 does not" in r.stderr  # each verdict, said


def test_table6_shows_our_tiny_runs_beside_the_paper(tiny: Path) -> None:
    r = resrepro("table", "table6", "--runs", str(RUNS), "--format", "csv", cwd=tiny)
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(io.StringIO(r.stdout)).set_index("model")
    for model, n in (("resnet20", 3), ("resnet56", 3), ("resnet110", 1)):
        seeds = [100 * final(tiny, model, s)["eval_error"] for s in range(n)]
        assert table.loc[model, "ours_mean"] == pytest.approx(sum(seeds) / n, abs=1e-3)
        assert table.loc[model, "n"] == n
    assert table.loc["resnet110", "paper"] == 6.43 and pd.isna(table.loc["resnet32", "ours_mean"])
    assert "delta" not in table.columns  # digits vs CIFAR-10: no difference, the claims' verdicts instead
    # at the tiny scale the claim is that depth does not hurt (the digits' 1-3% cannot resolve the paper's gain)
    assert "ResNet-56 does not test worse than ResNet-20 by more than 3 points" in r.stderr
