"""The data tests' CIFAR-10 files in the real on-disk format, for evaluations that read them."""

from tests.data.conftest import fake_cifar  # noqa: F401
