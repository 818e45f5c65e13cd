"""The paper's CIFAR schedule, step by step (§4.2): warm-up release, the drops at 32k and 48k, resume."""

import pytest

from resrepro.train.schedule import Schedule
from resrepro.train.spec import RunSpec


def paper(warmup=False):
    return Schedule(lr=0.1, milestones=(32_000, 48_000), decay=0.1, warmup=warmup)


def test_drops_at_32k_and_48k():
    s = paper()
    assert [s.lr_at(i) for i in (0, 31_999)] == [0.1, 0.1]
    assert s.lr_at(32_000) == pytest.approx(0.01) and s.lr_at(47_999) == pytest.approx(0.01)
    assert s.lr_at(48_000) == pytest.approx(0.001) and s.lr_at(63_999) == pytest.approx(0.001)


def test_warmup_holds_001_until_training_error_below_80_percent_then_restores_01():
    s = paper(warmup=True)
    for step in range(30):  # error stays at 90%: still warming up
        assert s.lr_at(step) == 0.01
        s.observe(step, 0.9)
    assert s.warming_up
    for step in range(30, 60):
        assert s.lr_at(step) == 0.01
        s.observe(step, 0.5)
        if not s.warming_up:
            break
    # released once the mean of the last 10 batches fell below 0.8: (k*0.5 + (10-k)*0.9)/10 < 0.8 at k=3
    assert s.released_at == 33
    assert s.lr_at(33) == 0.1  # back to exactly the base lr, not stuck at 0.01 (akamaster issue #21)
    assert s.lr_at(32_000) == pytest.approx(0.01)  # drops not shifted by the warm-up
    s.observe(40, 0.99)  # later errors no longer matter
    assert s.lr_at(40) == 0.1


def test_schedule_resumes_mid_warmup():
    a = paper(warmup=True)
    for step, err in enumerate([0.9, 0.85, 0.7, 0.6, 0.95]):
        a.observe(step, err)
    b = paper(warmup=True)
    b.load_state_dict(a.state_dict())
    for step in range(5, 40):
        err = 0.6 if step % 3 else 0.95
        a.observe(step, err)
        b.observe(step, err)
        assert a.lr_at(step) == b.lr_at(step)
    assert a.released_at == b.released_at is not None


def test_warmup_defaults_on_for_n_at_least_18():
    assert not RunSpec(model="resnet56").uses_warmup
    assert RunSpec(model="resnet110").uses_warmup
    assert RunSpec(model="resnet1202").uses_warmup
    assert RunSpec(model="resnet20", warmup=True).uses_warmup
