"""Table 5: the paper's ensemble (ILSVRC 2015) beside ours, the softmax of our Table 4 nets averaged image by
image under multi-scale testing. An ensemble's error needs each image's probabilities: a run's multi-scale
evaluation (`resrepro eval RUN --multi-scale`, or the sweep) keeps them in RUN/eval/, and the table reads them —
rendering never builds or runs a net."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from resrepro.analysis.aggregate import find_runs, frame_of
from resrepro.analysis.selection import select_runs
from resrepro.models.registry import canonical_model
from resrepro.paper import paper_table
from resrepro.report.provenance import made_by, made_by_lines
from resrepro.report.table_kit import COLUMN_NOTE, PAPER_DATASET, Table, TableSpec, csv_order, run_notes

PROTOCOL = "multi-scale"  # Table 4's single-model protocol, which the paper's ensemble combines
ENSEMBLE = "resnet-ensemble"  # table5.csv's row of the paper's entry


def rows() -> pd.DataFrame:
    """The paper's Table 5 row (top-5 only, on the ImageNet test set), then Table 4's nets, our members."""
    t5, t4 = paper_table("table5"), paper_table("table4")
    ensemble = t5[["model", "label", "source"]].assign(paper_top1=math.nan, paper_top5=t5["top5"])
    members = t4[["model", "label", "source"]].assign(paper_top1=t4["top1"], paper_top5=t4["top5"])
    return pd.concat([ensemble, members], ignore_index=True)


def build_table5(name: str, spec: TableSpec, runs_dir: str | Path | None, dataset: str | None) -> Table:
    """Our ensemble of every finished run of Table 4's nets found under ``runs_dir`` whose multi-scale evaluation
    kept its probabilities."""
    from resrepro.train.ensemble import kept_ensemble
    from resrepro.train.evaluate import probs_path

    table = spec.rows().reset_index(drop=True)
    keys = table["model"].map(canonical_model)
    found, warnings = find_runs(runs_dir) if runs_dir is not None else ([], [])
    chosen = select_runs(found, set(keys) - {ENSEMBLE}, dataset=dataset,
                         preferred_dataset=PAPER_DATASET[spec.family])
    warnings += chosen.warnings
    runs = [r for shown in chosen.runs.values() for r in shown if r.finished]
    lacking = [r for r in runs if not probs_path(r.path, PROTOCOL).is_file()]
    if lacking:
        warnings.append(f"{', '.join(str(r.path) for r in lacking)}: no kept {PROTOCOL} probabilities, not counted; "
                        f"`resrepro eval RUN --{PROTOCOL}` (or `resrepro sweep table5`) makes them")
        runs = [r for r in runs if r not in lacking]
    results: dict[str, list[dict]] = {}  # row key -> results: the ensemble's, each member's
    if len(runs) > 1:
        ensemble = kept_ensemble([r.path for r in runs], PROTOCOL)
        results[ENSEMBLE] = [ensemble]
        for run, member in zip(runs, ensemble["members"], strict=True):
            results.setdefault(run.model, []).append(member)
    elif runs:
        warnings.append(f"only {runs[0].path} is a finished run of Table 4's nets: an ensemble needs two or more")
    for m in spec.metrics:
        values = {k: pd.Series([100 * r[m.column] for r in rs], dtype=float) for k, rs in results.items()}
        for stat in ("mean", "std", "min"):
            column = f"ours_{'best' if stat == 'min' else stat}{m.suffix}"
            table[column] = keys.map({k: getattr(v, stat)() for k, v in values.items()}).astype(float)
        table[f"delta{m.suffix}"] = table[f"ours_mean{m.suffix}"] - table[f"paper{m.suffix}"]
    frame = frame_of(runs)
    counted = {k: len(rs) for k, rs in results.items()} | ({ENSEMBLE: len(runs)} if results else {})
    iters = frame.groupby("model")["iters"].max().to_dict() | ({ENSEMBLE: frame["iters"].max()} if results else {})
    table["n"] = keys.map(counted).astype("Int64")
    table["dataset"] = keys.map({k: chosen.dataset for k in counted})
    table["iters"] = keys.map(iters).astype("Float64").astype("Int64")
    described = [f"Ours: the softmax of {len(runs)} runs ({', '.join(r.path.name for r in runs)}) averaged image "
                 f"by image, each under {PROTOCOL} testing on {chosen.dataset} val; the paper's ensemble (six "
                 "nets of different depth) is scored on the ImageNet test set, where it reports top-5 only."]
    notes = [COLUMN_NOTE.replace("over seeds", "over runs"), *spec.notes, *(described if results else []),
             *run_notes(frame, spec, chosen.dataset), *made_by_lines(made_by(runs))]
    # The claims' values: one row per result, the ensemble's and each member's, as the table counts them.
    columns = [m.column for m in spec.metrics]
    values = pd.DataFrame([{"model": k, **{c: 100 * r[c] for c in columns}} for k, rs in results.items() for r in rs],
                          columns=["model", *columns])
    return Table(name, spec, table[csv_order(table, spec)], notes, list(dict.fromkeys(warnings)), values,
                 chosen.dataset)
