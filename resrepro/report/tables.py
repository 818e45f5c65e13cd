"""The paper's tables with our numbers beside them (mean ± std over seeds), as Markdown, CSV or LaTeX.

Ours come only from finished run directories; a row without runs shows "—", never a number from elsewhere.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from resrepro.analysis.aggregate import canonical_model, find_runs, finished_only, frame_of, summarise
from resrepro.analysis.selection import select_runs
from resrepro.errors import ResreproError
from resrepro.paper import paper_table

FORMATS = ("markdown", "csv", "latex")
PAPER_DATASET = {"cifar": "cifar10", "imagenet": "imagenet", "voc": "voc07+12", "coco": "coco"}
PAPER_ITERS = {"cifar": 64_000}  # §4.2; ImageNet stops on a plateau (§3.4), so it has no length to compare
PAPER_WIDTH = {"cifar": 16, "imagenet": 64, "voc": 64, "coco": 64}  # first-stage filters (§4.2, Table 1)
DASH = "—"
COLUMN_NOTE = ("ours: mean ± std over seeds of the final iterate (no test-set model selection); best: the "
               "lowest run; n: runs counted; Δ: ours mean − paper (the paper's mean where it prints one).")


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


def _rows(name: str, **paper_columns: str) -> Callable[[], pd.DataFrame]:
    def rows() -> pd.DataFrame:
        t = paper_table(name)
        out = t[["model", "label", "source"]].copy()
        for ours, theirs in paper_columns.items():
            out[ours] = t[theirs]
        return out

    return rows


def _ablation_rows() -> pd.DataFrame:
    t6 = paper_table("table6").set_index("model")
    rows = []
    for depth in (20, 32, 44, 56):
        for option in "ABC":
            a = option == "A"  # Table 6's nets are option A: the only rows with paper numbers
            model = f"resnet{depth}" + ("" if a else f"-{option}")
            rows.append({"model": model, "label": f"ResNet-{depth} {option}", "layers": depth,
                         "source": "paper" if a else "ours",
                         "paper_params_m": t6.params_m[model] if a else math.nan,
                         "paper": t6.error[model] if a else math.nan})
    return pd.DataFrame(rows)


def _detection_rows(table: int, **columns: tuple[str, str]) -> Callable[[], pd.DataFrame]:
    """Table 7 or 8 from results/paper/table7_8.csv, one row per backbone; ``columns``: ours -> (benchmark,
    metric) of the paper's."""
    def rows() -> pd.DataFrame:
        t = paper_table("table7_8")
        t = t[t["table"] == table]
        out = t[["model", "label", "source"]].drop_duplicates("model").reset_index(drop=True)
        for ours, (benchmark, metric) in columns.items():
            values = t[(t["benchmark"] == benchmark) & (t["metric"] == metric)].set_index("model")["value"]
            out[ours] = out["model"].map(values)
        # The tiny scale's VGG-style backbone (VGG-16 without BN does not train there): ours only, no paper number.
        tiny_vgg = {"model": "vgg16-bn", "label": "VGG-16 with BN (tiny scale)", "source": "ours"}
        return pd.concat([out.iloc[:1], pd.DataFrame([tiny_vgg]), out.iloc[1:]], ignore_index=True)

    return rows


def _calibration_rows() -> pd.DataFrame:
    cal, t6 = paper_table("calibration"), paper_table("table6").set_index("model")
    rows = []
    for model, group in cal.groupby("model", sort=False):
        row = {"model": model, "label": t6.label.get(model, model.replace("plain", "plain-")),
               "source": "paper", "paper": t6.error.get(model, math.nan)}
        for r in group.itertuples():
            row[r.source], row[f"{r.source}_std"] = r.error, r.error_std
        rows.append(row)
    return pd.DataFrame(rows)


def _calibration_notes() -> tuple[str, ...]:
    cal = paper_table("calibration").drop_duplicates("source")
    return tuple(f"{r.source}: {r.note}." for r in cal.itertuples())


def _table5() -> TableSpec:
    from resrepro.report import table5

    # No protocol: the renderer evaluates the ensemble itself, so a sweep has nothing to evaluate beforehand.
    return TableSpec("Table 5: ensemble error (%), the paper's ILSVRC 2015 entry and ours, multi-scale testing",
                     "imagenet", (Metric("top1_error", "_top1", "top-1 "), Metric("top5_error", "_top5", "top-5 ")),
                     table5.rows, build=table5.build_table5)


_CIFAR = Metric("eval_error")
_DETECTION_NOTE = ("Faster R-CNN, the same system for both backbones (appendix A); mAP in %. Ours: RPN and Fast "
                   "R-CNN trained jointly in one step.")
TABLES: dict[str, Callable[[], TableSpec]] = {
    "table2": lambda: TableSpec(
        "Table 2: top-1 error (%) on ImageNet validation, 10-crop testing", "imagenet",
        (Metric("ten_crop_top1", protocol="ten-crop"),), _rows("table2", paper="top1")),
    "table3": lambda: TableSpec(
        "Table 3: error (%) on ImageNet validation, 10-crop testing", "imagenet",
        (Metric("ten_crop_top1", "_top1", "top-1 ", "ten-crop"),
         Metric("ten_crop_top5", "_top5", "top-5 ", "ten-crop")),
        _rows("table3", paper_top1="top1", paper_top5="top5")),
    "table4": lambda: TableSpec(
        "Table 4: single-model error (%) on ImageNet validation, multi-scale testing", "imagenet",
        (Metric("multi_scale_top1", "_top1", "top-1 ", "multi-scale"),
         Metric("multi_scale_top5", "_top5", "top-5 ", "multi-scale")),
        _rows("table4", paper_top1="top1", paper_top5="top5")),
    "table5": _table5,
    "table6": lambda: TableSpec(
        "Table 6: classification error (%) on the CIFAR-10 test set", "cifar", (_CIFAR,),
        _rows("table6", layers="layers", paper_params_m="params_m", paper="error", paper_mean="error_mean",
              paper_std="error_std"),
        params=True, split="test",
        notes=("paper: as printed; for ResNet-110 (5 runs) and Highway-19: best (mean±std).",)),
    "table7": lambda: TableSpec(
        "Table 7: object detection mAP (%) on PASCAL VOC 2007/2012 test, Faster R-CNN", "voc",
        (Metric("voc07_map", "_voc07", "VOC07 ", "voc07", True),
         Metric("voc12_map", "_voc12", "VOC12 ", "voc12", True)),
        _detection_rows(7, paper_voc07=("VOC 2007 test", "mAP"), paper_voc12=("VOC 2012 test", "mAP")),
        notes=(_DETECTION_NOTE, "The paper trains on 07+12 for VOC07 test and on 07++12 for VOC12 test (whose "
               "annotations are not public); a run shows both definitions of AP on its own test split: VOC07's "
               "11-point, VOC12's area under the curve.")),
    "table8": lambda: TableSpec(
        "Table 8: object detection mAP (%) on COCO val, Faster R-CNN", "coco",
        (Metric("coco_map50", "_map50", "mAP@.5 ", "coco", True),
         Metric("coco_map", "_map", "mAP@[.5,.95] ", "coco", True)),
        _detection_rows(8, paper_map50=("COCO val", "mAP@.5"), paper_map=("COCO val", "mAP@[.5,.95]")),
        notes=(_DETECTION_NOTE,)),
    "ablation-cifar": lambda: TableSpec(
        "Shortcut options A/B/C on CIFAR-10 (Table 3's question): test error (%)", "cifar", (_CIFAR,),
        _ablation_rows, params=True, split="test",
        notes=("The paper compares A/B/C on ImageNet (Table 3); on CIFAR-10 it reports option A only "
               "(Table 6), so the B and C rows have no paper number.",)),
    "calibration": lambda: TableSpec(
        "CIFAR-10 test error (%): the paper, public re-implementations, ours", "cifar", (_CIFAR,),
        _calibration_rows, split="test", extra=("akamaster", "nabla0001"), notes=_calibration_notes()),
}


def table_names() -> list[str]:
    return list(TABLES)


def table_protocols(name: str) -> tuple[str, ...]:
    """The ImageNet test protocols whose RUN/eval/<protocol>.json the table reads (none for CIFAR tables)."""
    if name not in TABLES:
        raise ResreproError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
    return tuple(dict.fromkeys(m.protocol for m in TABLES[name]().metrics if m.protocol))


def build_table(name: str, runs_dir: str | Path | None = None, dataset: str | None = None) -> Table:
    """The numbers of one table: the paper's, and ours from the finished runs under ``runs_dir``."""
    if name not in TABLES:
        raise ResreproError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
    spec = TABLES[name]()
    if spec.build is not None:
        return spec.build(name, spec, runs_dir, dataset)
    rows = spec.rows().reset_index(drop=True)
    keys = rows["model"].map(canonical_model).where(rows["source"] != "other")  # NaN: others' rows
    found, warnings = find_runs(runs_dir) if runs_dir is not None else ([], [])
    chosen = select_runs(found, set(keys.dropna()), dataset=dataset,
                         preferred_dataset=PAPER_DATASET[spec.family], split=spec.split)
    runs, unfinished = finished_only(frame_of([r for shown in chosen.runs.values() for r in shown]))
    warnings += chosen.warnings + unfinished
    notes = _notes(runs, spec, chosen.dataset)
    for m in spec.metrics:
        s = summarise(runs, by=("model",), value=m.column, best="max" if m.higher_is_better else "min")
        s = s.set_index("model")
        for stat in ("mean", "std", "best"):
            rows[f"ours_{stat}{m.suffix}"] = keys.map(s[stat]).astype(float)
        rows[f"_n{m.suffix}"] = keys.map(s["n"]).fillna(0)
        paper = rows[f"paper{m.suffix}"]
        if f"paper_mean{m.suffix}" in rows:
            paper = rows[f"paper_mean{m.suffix}"].fillna(paper)
        rows[f"delta{m.suffix}"] = rows[f"ours_mean{m.suffix}"] - paper
        without = runs[runs[m.column].isna()] if m.column in runs else runs
        for model, g in without.groupby("model"):
            warnings.append(f"{model}: {len(g)} finished run(s) without {m.how} not counted")
    ours = keys.notna()
    n_cols = [f"_n{m.suffix}" for m in spec.metrics]
    rows["n"] = rows[n_cols].max(axis=1).astype("Int64").where(ours, pd.NA)
    if spec.params:
        trained = _trained_params(runs)
        rows["params"] = pd.array([trained.get(k, _params(k)) if isinstance(k, str) else pd.NA for k in keys],
                                  dtype="Int64")
    counted = rows["n"].fillna(0) > 0
    rows["dataset"] = keys.map(runs.groupby("model")["dataset"].first()).where(counted)
    rows["iters"] = keys.map(runs.groupby("model")["iters"].max()).where(counted).astype("Float64")
    rows = rows.astype({c: "Int64" for c in ("layers", "iters") if c in rows})
    rows = rows.drop(columns=n_cols)
    # A score's best run is its highest (mAP), an error's its lowest.
    column_note = COLUMN_NOTE.replace("lowest", "highest") if spec.metrics[0].higher_is_better else COLUMN_NOTE
    return Table(name, spec, rows[_csv_order(rows, spec)], [column_note, *spec.notes, *notes],
                 list(dict.fromkeys(warnings)))


def _notes(runs: pd.DataFrame, spec: TableSpec, chosen: str | None) -> list[str]:
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


@functools.cache
def _params(model: str, width: int | None = None) -> int:
    """Our exact parameter count at ``width`` (default: the paper's), built on the meta device."""
    from resrepro.models.registry import resolve
    from resrepro.models.summary import model_counts

    return model_counts(resolve(model), width=width)[0]


def _trained_params(runs: pd.DataFrame) -> dict[str, int]:
    """Model -> parameters of the nets its counted runs trained: as their summary.json records, else built at
    their width (the tiny scale's 8 filters: a quarter of the paper's count, not the paper's net)."""
    out = {}
    for model, g in runs.groupby("model"):
        recorded = pd.to_numeric(g["params"], errors="coerce").dropna()
        width = g["width"].dropna()
        out[str(model)] = int(recorded.iloc[0]) if len(recorded) else _params(
            str(model), int(width.iloc[0]) if len(width) else None)
    return out


def _csv_order(rows: pd.DataFrame, spec: TableSpec) -> list[str]:
    cols = ["model", "label", "source"]
    if spec.params:
        cols += ["layers", "paper_params_m", "params"]
    for m in spec.metrics:
        cols += [c + m.suffix for c in ("paper", "paper_mean", "paper_std") if c + m.suffix in rows]
        cols += [c for x in spec.extra for c in (x, f"{x}_std")]
        cols += [f"{c}{m.suffix}" for c in ("ours_mean", "ours_std", "ours_best", "delta")]
    return [*cols, "n", "dataset", "iters"]


def render_table(name: str, runs_dir: str | Path | None = None, fmt: str = "markdown",
                 dataset: str | None = None) -> tuple[str, list[str]]:
    """One table as text (``markdown``, ``csv`` or ``latex``), and the warnings met while reading runs."""
    if fmt not in FORMATS:
        raise ResreproError(f"unknown format {fmt!r}: choose {', '.join(FORMATS)}")
    t = build_table(name, runs_dir, dataset)
    if fmt == "csv":
        return t.frame.round(4).to_csv(index=False), t.warnings
    shown = display_frame(t)
    if fmt == "markdown":
        body = shown.to_markdown(index=False, disable_numparse=True,
                                 colalign=["left"] + ["right"] * (shown.shape[1] - 1))
        return f"**{t.spec.title}**\n\n{body}\n\n" + "\n\n".join(t.notes) + "\n", t.warnings
    shown = shown.rename(columns=lambda c: c.replace("Δ", "delta"))  # pdflatex's utf8 lacks Greek
    comments = "".join(f"% {line}\n" for line in [t.spec.title, *t.notes])
    return comments + _latex(shown).rstrip("\n") + "\n", t.warnings


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
        cols[f"{h}Δ"] = cell(f[f"delta{s}"], lambda v: f"{v:+.2f}")
    cols["n"] = ["" if not o else str(k) for o, k in zip(ours, n, strict=True)]
    return pd.DataFrame(cols)


def _pm(mean: float, std: float) -> str:
    """Mean ± std as "7.02 ± 0.15"; a single run (std NaN) is just its number."""
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"
