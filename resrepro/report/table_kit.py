"""What every table of ours is made of: the paper's conventions (datasets, lengths, widths), the caption
notes, the claims judged on its runs, and the renderer of a built table as Markdown, CSV or LaTeX (means ± std,
"—" for no runs)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from tabulate import tabulate

from resrepro.analysis.claims import Verdict
from resrepro.errors import ResreproError
from resrepro.report.claims import caveat_of, claim_lines, verdicts_for

FORMATS = ("markdown", "csv", "latex")
PAPER_DATASET = {"cifar": "cifar10", "imagenet": "imagenet", "voc": "voc07+12", "coco": "coco"}
PAPER_ITERS = {"cifar": 64_000}  # §4.2; ImageNet stops on a plateau (§3.4), so it has no length to compare
PAPER_WIDTH = {"cifar": 16, "imagenet": 64, "voc": 64, "coco": 64}  # first-stage filters (§4.2, Table 1)
DASH = "—"
COLUMN_NOTE = ("ours: mean ± std over seeds of the final iterate (no test-set model selection); best: the "
               "lowest run; n: runs counted; Δ: ours mean − paper (the paper's mean where it prints one).")
CAVEAT = "Caveat:"  # before an experiment's caveat, first in the caption ("At this scale (...) ... does not show ...")
NO_DELTA = ("No Δ column: our runs are on {ours}, the paper's on {paper}, and a difference between two datasets "
            "means nothing; the claims below are the comparison.")


@dataclass(frozen=True)
class Metric:
    column: str  # a runs_frame column, in percent
    suffix: str = ""  # appended to this metric's CSV columns when a table has several ("_top1")
    header: str = ""  # prefix of its display headers ("top-1 ")
    protocol: str = ""  # the ImageNet test protocol (§3.4) or detection protocol: RUN/eval/<protocol>.json
    higher_is_better: bool = False  # a score (mAP), not an error: its best run is the highest

    @property
    def how(self) -> str:
        """How to produce the metric for a finished run that lacks it."""
        if not self.protocol:
            return self.column
        flag = f"--protocol {self.protocol}" if self.higher_is_better else f"--{self.protocol}"
        return f"a {self.protocol} evaluation (`resrepro eval RUN {flag}`; `resrepro sweep` runs it)"


@dataclass(frozen=True)
class TableSpec:
    title: str
    family: str  # cifar | imagenet: which dataset (and length) the paper's runs used
    metrics: tuple[Metric, ...]
    rows: Callable[[], pd.DataFrame]  # model, label, source, paper{suffix}, ... in the paper's order
    params: bool = False  # show # layers and # params, the paper's beside our exact count
    split: str | None = None  # only runs evaluated on this split count
    extra: tuple[str, ...] = ()  # third-party columns (``x``, ``x_std``) shown beside the paper's
    notes: tuple[str, ...] = ()
    # A table whose numbers are not the runs' own (an ensemble's): build(name, spec, runs_dir, dataset) -> Table.
    build: Callable[..., Table] | None = None


@dataclass
class Table:
    """A table ready to render: ``frame`` holds numbers (one row per table row), ``notes`` the caption."""

    name: str
    spec: TableSpec
    frame: pd.DataFrame
    notes: list[str]
    warnings: list[str]
    values: pd.DataFrame | None = None  # one row per finished run counted (model, metrics in %): the claims'
    dataset: str | None = None  # the dataset of our runs shown
    claims: list[Verdict] = field(default_factory=list)


def judged(t: Table) -> Table:
    """``t`` with the claims of its experiment decided on its runs, without Δ columns when those runs are on
    another dataset than the paper's (the tiny scale's digits): a difference across datasets means nothing, and
    with its experiment's caveat at their scale first in the caption, where that scale cannot show the claim."""
    caveat = caveat_of(t.name, t.dataset)
    if caveat:
        t.notes = [f"**{CAVEAT}** {caveat}", *t.notes]
    paper = PAPER_DATASET[t.spec.family]
    if t.dataset is not None and t.dataset != paper:
        t.frame = t.frame.drop(columns=[c for c in t.frame if c.startswith("delta")])
        t.notes = [n.replace("; Δ: ours mean − paper (the paper's mean where it prints one).", ".")
                   for n in t.notes] + [NO_DELTA.format(ours=t.dataset, paper=paper)]
    values = t.values if t.values is not None else pd.DataFrame(columns=["model"])
    t.claims = verdicts_for(t.name, values, t.dataset)
    return t


def run_notes(runs: pd.DataFrame, spec: TableSpec, chosen: str | None) -> list[str]:
    """Caption lines saying how our runs differ from the paper's (dataset, length)."""
    notes, paper_ds = [], PAPER_DATASET[spec.family]
    if chosen is not None and chosen != paper_ds:
        notes.append(f"Ours: trained and evaluated on {chosen}, not {paper_ds} as in the paper: "
                     "compare trends, not values.")
    widths = sorted({int(w) for w in runs["width"].dropna()} - {PAPER_WIDTH[spec.family]})
    if spec.params and widths:
        notes.append(f"Ours: {', '.join(map(str, widths))} filters wide where the paper has "
                     f"{PAPER_WIDTH[spec.family]}; # params (ours) counts the nets trained (rows without runs: "
                     "the paper's width).")
    paper_iters = PAPER_ITERS.get(spec.family)
    lengths = sorted({int(i) for i in runs["iters"].dropna()})
    if paper_iters and lengths and lengths != [paper_iters]:
        its = ", ".join(f"{i:,}" for i in lengths)
        notes.append(f"Ours: {its} iterations; the paper trains {paper_iters:,}.")
    return notes


def csv_order(rows: pd.DataFrame, spec: TableSpec) -> list[str]:
    """The CSV's columns in reading order: the row, the paper's numbers, ours, then how ours were made."""
    cols = ["model", "label", "source"]
    if spec.params:
        cols += ["layers", "paper_params_m", "params"]
    for m in spec.metrics:
        cols += [c + m.suffix for c in ("paper", "paper_mean", "paper_std") if c + m.suffix in rows]
        cols += [c for x in spec.extra for c in (x, f"{x}_std")]
        cols += [f"{c}{m.suffix}" for c in ("ours_mean", "ours_std", "ours_best", "delta")]
    return [*cols, "n", "dataset", "iters"]


def check_format(fmt: str) -> None:
    """Refuse an unknown output format before anything is built."""
    if fmt not in FORMATS:
        raise ResreproError(f"unknown format {fmt!r}: choose {', '.join(FORMATS)}")


def render(t: Table, fmt: str = "markdown") -> str:
    """A built table as text: ``markdown`` (title, table, notes), ``csv`` (the numbers) or ``latex``."""
    check_format(fmt)
    if fmt == "csv":
        return t.frame.round(4).to_csv(index=False)
    shown = display_frame(t)
    if fmt == "markdown":
        body = shown.to_markdown(index=False, disable_numparse=True,
                                 colalign=["left"] + ["right"] * (shown.shape[1] - 1))
        claims = "\n".join(claim_lines(t.claims))
        return f"**{t.spec.title}**\n\n{body}\n\n" + "\n\n".join(t.notes) + (f"\n\n{claims}" if claims else "") + "\n"
    shown = shown.rename(columns=lambda c: c.replace("Δ", "delta"))  # pdflatex's utf8 lacks Greek
    comments = "".join(f"% {line}\n" for line in [t.spec.title, *t.notes, *claim_lines(t.claims)] if line)
    return comments + _latex(shown).rstrip("\n") + "\n"


def _latex(shown: pd.DataFrame) -> str:
    # tabulate, as for Markdown: pandas' to_latex needs jinja2, which we do not depend on.
    return tabulate(shown, headers="keys", tablefmt="latex_booktabs", showindex=False, disable_numparse=True,
                    colalign=["left"] + ["right"] * (shown.shape[1] - 1)) + "\n"


def display_frame(t: Table) -> pd.DataFrame:
    """The table as strings, as a reader wants it: "7.02 ± 0.15", "—" for no runs, blank for others' rows."""
    f, spec = t.frame, t.spec
    ours = f["source"] != "other"
    n = f["n"].fillna(0).astype(int)

    def cell(values: Iterable, text: Callable[[Any], str]) -> list[str]:
        return ["" if not o else DASH if k == 0 or pd.isna(v) else text(v)
                for o, k, v in zip(ours, n, values, strict=True)]

    cols: dict[str, list[str] | pd.Series] = {"method": f["label"]}
    if spec.params:
        cols["# layers"] = [DASH if pd.isna(v) else str(int(v)) for v in f["layers"]]
        cols["# params (paper)"] = [DASH if pd.isna(v) else f"{v:g}M" for v in f["paper_params_m"]]
        cols["# params (ours)"] = ["" if pd.isna(v) else f"{int(v):,}" for v in f["params"]]
    for m in spec.metrics:
        s, h = m.suffix, m.header
        mean, std = f.get(f"paper_mean{s}"), f.get(f"paper_std{s}")
        cols[f"{h}paper"] = [
            DASH if pd.isna(p) else f"{p:.2f}" + ("" if mean is None or pd.isna(mean[i]) else
                                                  f" ({mean[i]:.2f}±{std[i]:.2f})")
            for i, p in enumerate(f[f"paper{s}"])]
        for x in spec.extra:
            cols[x] = [DASH if pd.isna(v) else _pm(v, e) for v, e in zip(f[x], f[f"{x}_std"], strict=True)]
        cols[f"{h}ours"] = cell(map(_pm, f[f"ours_mean{s}"], f[f"ours_std{s}"]), str)
        cols[f"{h}best"] = cell(f[f"ours_best{s}"], lambda v: f"{v:.2f}")
        if f"delta{s}" in f:
            cols[f"{h}Δ"] = cell(f[f"delta{s}"], lambda v: f"{v:+.2f}")
    cols["n"] = ["" if not o else str(k) for o, k in zip(ours, n, strict=True)]
    return pd.DataFrame(cols)


def _pm(mean: float, std: float) -> str:
    """Mean ± std as "7.02 ± 0.15"; a single run (std NaN) is just its number."""
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"
