"""`resrepro report`: one offline page of every artefact with runs, re-rendered from them, checked in a real
headless browser (Debian's chromium) where one is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from resrepro.errors import ResreproError
from resrepro.report.gallery import build_report
from tests.inprocess import in_process_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
CHROMIUM = shutil.which("chromium")
FIG6_ORANGE = (0xE6, 0x9F, 0x00)  # ResNet-20's colour: no other artefact of these runs draws it


@pytest.fixture
def tiny(tmp_path) -> tuple[Path, Path]:
    """A runs root holding the fixture's tiny CIFAR run (ResNet-20 on digits, width 8), and an output folder."""
    shutil.copytree(FIXTURES / "cifar10" / "tiny", tmp_path / "runs" / "cifar10" / "tiny")
    return tmp_path / "runs", tmp_path / "results"


def test_the_page_holds_table6_and_fig6_rendered_from_the_runs(tiny):
    runs, out = tiny
    written, _ = build_report(runs, out)
    assert {out / "report.html", out / "report.md", out / "table6" / "tiny" / "table6.md",
            out / "fig6" / "tiny" / "fig6.png", out / "table6" / "tiny" / "provenance.json"} <= set(written)
    page = (out / "report.html").read_text()
    assert '<section id="table6-tiny">' in page and '<section id="fig6-tiny">' in page
    table6 = page.split('<section id="table6-tiny">')[1].split("</section>")[0]
    assert "<table>" in table6 and ">68,050</td>" in table6  # the width-8 net trained, the paper's beside it
    assert ">0.27M</td>" in table6 and ">8.75</td>" in table6
    # what made it: the command, and the provenance the run recorded
    assert f"resrepro sweep table6 --scale tiny --runs {runs}" in table6 and "fixture" in table6
    assert json.loads((out / "table6" / "tiny" / "provenance.json").read_text())["runs"] == 1
    assert page.count('src="data:image/png;base64,') == 1  # Fig. 6; Fig. 1 and 7 have no runs here
    assert not re.search(r"https?://|<link|<script", page)  # nothing to fetch: it opens offline
    md = (out / "report.md").read_text()
    assert "![Fig. 6" in md and "(fig6/tiny/fig6.png)" in md and "| ResNet-20 " in md
    # each artefact's claims: counted under its heading, each with its numbers; one ResNet-20 run decides none
    section = md.split("## Table 6")[1].split("\n## ")[0]
    assert "The paper's claims: **2 not enough runs**" in section
    assert "- **not enough runs** — ResNet-56 does not test worse than ResNet-20 by more than 3 points" in section
    assert (out / "table6" / "tiny" / "table6_claims.csv").is_file()


def test_without_runs_the_page_shows_what_the_results_folder_holds(tiny, tmp_path):
    runs, out = tiny
    build_report(runs, out)
    (out / "table6" / "tiny" / "provenance.json").unlink()  # rendered before provenance was recorded
    (out / "report.html").unlink()
    written, _ = build_report(None, out)
    assert written == [out / "report.html", out / "report.md"]
    page = (out / "report.html").read_text()
    assert '<section id="table6-tiny">' in page and "not at hand when this page was made" in page
    with pytest.raises(ResreproError, match="nothing to report"):
        build_report(tmp_path / "nothing", tmp_path / "empty")


def test_cli_report_and_a_bad_runs_folder(tiny, monkeypatch, capsys):
    runs, out = tiny
    code, _, err = in_process_cli(monkeypatch, capsys, "report", "--runs", str(runs), "--out", str(out))
    assert code == 0 and f"wrote {out / 'report.html'}" in " ".join(err.split())
    # each claim with its verdict, under the artefact it belongs to
    assert "claim not enough runs: ResNet-56 does not test worse than ResNet-20" in " ".join(err.split())
    (runs.parent / "file").write_text("")
    code, _, err = in_process_cli(monkeypatch, capsys, "report", "--runs", str(runs.parent / "file"), "--out",
                                  str(out))
    assert code == 2 and err.count("\n") == 1 and "is a file" in err


def chromium(*args: str) -> str:
    # No network: every host name resolves to nothing, so a page that needed one would show it.
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--host-resolver-rules=MAP * ~NOTFOUND", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs a headless browser: apt-get install chromium (.ci/run does)")
@pytest.mark.parametrize("source", ["runs", "committed"])
def test_a_headless_browser_shows_table6_and_fig6_offline(source, tiny, tmp_path):
    """From the fixture's tiny run, and from the repository's committed tiny results (their runs are not
    committed: the page is assembled from the rendered files, as `resrepro report` does without runs)."""
    from PIL import Image

    runs, out = tiny
    if source == "runs":
        build_report(runs, out)
    else:
        shutil.copytree(Path(__file__).resolve().parents[2] / "results", out)
        build_report(None, out)
    page = out / "report.html"
    # The DOM as the browser built it, with each image's decoded size written into it once loaded.
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", "<script>addEventListener('load', () => { for (const i of "
                                              "document.images) i.dataset.natural = i.naturalWidth + 'x' + "
                                              "i.naturalHeight })</script></body>"))
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    assert "Table 6: classification error" in dom and "# params (ours)" in dom and "68,050" in dom
    sizes = re.findall(r'data-natural="(\d+)x(\d+)"', dom)
    assert len(sizes) == dom.count("<img") and all(int(w) > 100 and int(h) > 100 for w, h in sizes)
    assert 'alt="Fig. 6' in dom
    # The screenshot shows Table 6 and Fig. 6 alone (the other sections hidden): Fig. 1 draws ResNet-20's orange
    # too, for plain-20.
    alone = tmp_path / "alone.html"
    alone.write_text(page.read_text().replace("</head>", "<style>section:not(#table6-tiny):not(#fig6-tiny) "
                                              "{ display: none }</style></head>"))
    shot = tmp_path / "shot.png"
    chromium("--window-size=1280,2600", f"--screenshot={shot}", alone.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.std() > 20  # not a blank page
    orange = (np.abs(pixels - FIG6_ORANGE).sum(axis=2) < 40).sum()
    assert orange > 200, f"{orange} pixels of Fig. 6's ResNet-20 curve on screen"


def test_the_page_shows_a_tiny_tables_caveat_in_its_caption(tmp_path):
    from resrepro.experiments import load_experiment

    runs = tmp_path / "runs" / "imagenet" / "tiny"
    shutil.copytree(FIXTURES / "imagenet" / "tiny", runs)  # ResNet-34 A, made as if on the digits
    for file in ("config.json", "summary.json"):
        path = runs / "resnet34-A-s0" / file
        path.write_text(path.read_text().replace('"dataset": "imagenet"', '"dataset": "digits"'))
    build_report(tmp_path / "runs", tmp_path / "results")
    caveat = load_experiment("table3", "tiny").caveat
    md = (tmp_path / "results" / "report.md").read_text()
    section = {n: md.split(f"## Table {n}")[1].split("\n## ")[0] for n in (2, 3)}
    assert caveat in section[3] and caveat not in section[2]  # each table's own caveat
    html = (tmp_path / "results" / "report.html").read_text().split('<section id="table3-tiny">')[1]
    assert "cannot be resolved" in html.split("</section>")[0]
