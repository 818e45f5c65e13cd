"""timm sees every registered architecture after `import resrepro.timm_models`, with the right classes."""

import subprocess
import sys

CREATE = """
import importlib, sys, warnings
import {first}, {second}
import resrepro.timm_models
import timm
m = timm.create_model("resrepro_resnet110")
assert m.fc.out_features == 10 and m.n == 18, m.fc
m = timm.create_model("resrepro_resnet34_a", num_classes=5)
assert m.fc.out_features == 5 and m.shortcut == "A"
m = timm.create_model("resrepro_resnet50_v1_5")
assert m.fc.out_features == 1000 and m.layer2[0].conv2.stride == (2, 2)
assert timm.create_model("resnet50").__class__.__module__.startswith("timm")  # timm's own names untouched
with warnings.catch_warnings():
    warnings.simplefilter("error")  # registering a name twice makes timm warn of an overwrite
    importlib.reload(resrepro.timm_models)
assert timm.create_model("resrepro_resnet110").fc.out_features == 10
print("ok")
"""


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_timm_create_model_after_import_in_either_order():
    for first, second in (("resrepro.timm_models", "timm"), ("timm", "resrepro.timm_models")):
        assert _run(CREATE.format(first=first, second=second)) == "ok"


def test_importing_resrepro_alone_loads_neither_timm_nor_torch():
    # Registration is the explicit import above; the package itself must stay cheap for `resrepro --help`.
    assert _run("import sys, resrepro; print(sorted({'timm', 'torch'} & set(sys.modules)))") == "[]"


def test_eval_import_of_a_timm_name_finds_our_models():
    # `resrepro eval --import timm:NAME` must register our models itself: nothing else imports them for it.
    code = """
from resrepro.errors import ResreproError
from resrepro.train.imports import import_model
try:
    import_model("timm:resrepro_resnet18", None)
except ResreproError as e:
    print(e)
"""
    assert "needs --weights FILE" in _run(code)
