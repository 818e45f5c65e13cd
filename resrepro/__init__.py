"""Reproduce He et al. 2015, "Deep Residual Learning for Image Recognition".

Importing this package is cheap (no torch, no timm): the CLI's ``--help`` must stay instant. To build our
models through timm, ``import resrepro.timm_models`` first, then ``timm.create_model("resrepro_resnet110")``.
"""

__version__ = "0.1.0"
