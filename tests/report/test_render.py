"""An experiment's tables and figures rendered from its run directories: written files, and warnings, not
errors, for what cannot be rendered yet."""

from __future__ import annotations

import dataclasses
import sys

from resrepro.errors import ResreproError
from resrepro.experiments import load_experiment
from resrepro.report.render import render_experiment


def test_tables_go_to_markdown_files_and_failures_become_warnings(tmp_path, monkeypatch):
    def render_table_files(name, runs_dir=None, dataset=None):
        return {f"{name}.md": f"| {name} {dataset} |\n"}, ["resnet1202 missing"]

    def render_figure(name, runs_dir, out_dir, *, dataset=None, force=False):
        raise ResreproError(f"nothing to render in {runs_dir}")

    for module, fn in (("tables", render_table_files), ("figures", render_figure)):
        monkeypatch.setitem(sys.modules, f"resrepro.report.{module}", type(sys)(module))
        monkeypatch.setattr(sys.modules[f"resrepro.report.{module}"], fn.__name__, fn, raising=False)
    exp = dataclasses.replace(load_experiment("table6", "tiny", seeds=1), renders=("table:table6", "figure:fig6"))
    paths, warnings = render_experiment(exp, tmp_path / "runs", tmp_path / "out")
    assert paths == [tmp_path / "out" / "table6.md"]
    assert (tmp_path / "out" / "table6.md").read_text() == "| table6 digits |\n"
    assert warnings == ["table:table6: resnet1202 missing",
                        f"figure:fig6: nothing to render in {tmp_path / 'runs' / 'cifar10' / 'tiny'}"]
