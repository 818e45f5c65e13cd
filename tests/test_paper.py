"""The paper's numbers as data: each table's CSV holds what the paper prints."""

from __future__ import annotations

import pandas as pd
import pytest

from resrepro.errors import ResreproError
from resrepro.paper import paper_table


@pytest.mark.parametrize(("name", "model", "column", "value"), [
    ("table6", "resnet110", "error", 6.43),
    ("table6", "resnet110", "error_mean", 6.61),
    ("table6", "resnet20", "params_m", 0.27),
    ("table6", "highway19", "error", 7.54),
    ("table3", "resnet34-C", "top1", 24.19),
    ("table3", "resnet34-C", "top5", 7.40),
    ("table3", "vgg16", "top5", 9.33),
    ("table4", "resnet152", "top1", 19.38),
    ("table4", "resnet152", "top5", 4.49),
    ("table2", "resnet34-A", "top1", 25.03),
    ("table2", "plain18", "top1", 27.94),
])
def test_paper_tables_hold_the_papers_numbers(name, model, column, value):
    t = paper_table(name).set_index("model")
    assert t.loc[model, column] == pytest.approx(value)


def test_paper_tables_other_numbers():
    assert paper_table("table1_flops").set_index("depth").loc[50, "paper_macs_g"] == 3.8
    assert paper_table("table5")["top5"].tolist() == [3.57]
    det = paper_table("table7_8").set_index(["benchmark", "metric", "model"])["value"]
    assert det[("COCO val", "mAP@[.5,.95]", "resnet101")] == 27.2
    cal = paper_table("calibration").set_index(["source", "model"])
    assert cal.loc[("nabla0001", "resnet110"), "error_std"] == 0.20
    assert cal.loc[("akamaster", "resnet56"), "error"] == 6.61
    t6 = paper_table("table6")
    others = {"maxout", "nin", "dsn", "fitnet19", "highway19", "highway32"}
    assert set(t6[t6.source == "other"].model) == others
    assert pd.isna(paper_table("table3").set_index("model").loc["googlenet", "top1"])  # printed as "–"


def test_unknown_paper_table_names_the_known_ones():
    with pytest.raises(ResreproError, match="table6"):
        paper_table("table9")
