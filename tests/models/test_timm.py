"""timm sees every registered architecture after `import resrepro`, with the right classes."""

import subprocess
import sys


def test_timm_create_model_after_import_in_either_order():
    code = """
import {first}, {second}
import timm
m = timm.create_model("resrepro_resnet110")
assert m.fc.out_features == 10 and m.n == 18, m.fc
m = timm.create_model("resrepro_resnet34_a", num_classes=5)
assert m.fc.out_features == 5 and m.shortcut == "A"
m = timm.create_model("resrepro_resnet50_v1_5")
assert m.fc.out_features == 1000 and m.layer2[0].conv2.stride == (2, 2)
assert timm.create_model("resnet50").__class__.__module__.startswith("timm")  # timm's own names untouched
print("ok")
"""
    for first, second in (("resrepro", "timm"), ("timm", "resrepro")):
        out = subprocess.run([sys.executable, "-c", code.format(first=first, second=second)],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "ok"
