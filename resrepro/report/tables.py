"""The paper's tables with our numbers beside them (mean ± std over seeds): which tables exist, their specs,
and building each one. Ours come only from finished run directories; a row without runs shows "—", never a
number from elsewhere."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from resrepro.analysis.aggregate import find_runs, finished_only, frame_of, summarise
from resrepro.analysis.claims import verdict_frame
from resrepro.analysis.selection import select_runs
from resrepro.errors import ResreproError
from resrepro.models.registry import canonical_model
from resrepro.paper import paper_table
from resrepro.report import table5
from resrepro.report.provenance import made_by, made_by_lines
from resrepro.report.table_kit import (
    COLUMN_NOTE,
    PAPER_DATASET,
    Metric,
    Table,
    TableSpec,
    check_format,
    csv_order,
    judged,
    render,
    run_notes,
)


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
    # The members' multi-scale evaluation (which keeps each image's probabilities) is what a sweep runs beforehand.
    return TableSpec("Table 5: ensemble error (%), the paper's ILSVRC 2015 entry and ours, multi-scale testing",
                     "imagenet", (Metric("top1_error", "_top1", "top-1 ", table5.PROTOCOL),
                                  Metric("top5_error", "_top5", "top-5 ", table5.PROTOCOL)),
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
        return judged(spec.build(name, spec, runs_dir, dataset))
    rows = spec.rows().reset_index(drop=True)
    keys = rows["model"].map(canonical_model).where(rows["source"] != "other")  # NaN: others' rows
    found, warnings = find_runs(runs_dir) if runs_dir is not None else ([], [])
    chosen = select_runs(found, set(keys.dropna()), dataset=dataset,
                         preferred_dataset=PAPER_DATASET[spec.family], split=spec.split)
    runs, unfinished = finished_only(frame_of([r for shown in chosen.runs.values() for r in shown]))
    warnings += chosen.warnings + unfinished
    notes = run_notes(runs, spec, chosen.dataset) + made_by_lines(made_by(r for rs in chosen.runs.values() for r in rs))
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
    return judged(Table(name, spec, rows[csv_order(rows, spec)], [column_note, *spec.notes, *notes],
                        list(dict.fromkeys(warnings)), runs, chosen.dataset))


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


def render_table(name: str, runs_dir: str | Path | None = None, fmt: str = "markdown",
                 dataset: str | None = None) -> tuple[str, list[str]]:
    """One table as text (``markdown``, ``csv`` or ``latex``), and the warnings met while reading runs."""
    check_format(fmt)
    t = build_table(name, runs_dir, dataset)
    return render(t, fmt), t.warnings


def render_table_files(name: str, runs_dir: str | Path | None = None, dataset: str | None = None
                       ) -> tuple[dict[str, str], list[str]]:
    """One table's files as `resrepro sweep` and `resrepro report` write them (file name -> text): ``<name>.md``
    and, where its experiment states claims, their verdicts as ``<name>_claims.csv``; and the warnings."""
    t = build_table(name, runs_dir, dataset)
    files = {f"{name}.md": render(t, "markdown")}
    if t.claims:
        files[f"{name}_claims.csv"] = verdict_frame(t.claims).round(4).to_csv(index=False)
    return files, t.warnings
