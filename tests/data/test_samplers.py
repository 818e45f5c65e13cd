"""Sampling for loader-worker datasets: an epoch's batches and a process's share of them, a resume mid-epoch,
per-sample seeded draws."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from resrepro.data.samplers import EpochLoader, EpochSampler, SeededDataset


class _Draws(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> tuple[int, float]:
        return index, torch.rand(()).item()


def test_an_epochs_batches_are_drawn_once_whatever_the_shares_and_a_resume_continues_them():
    data = _Draws()
    whole = list(EpochSampler(data, seed=3, epoch=1, batch=4, take=None))
    # One process's order is DistributedSampler's with one replica, as before shares existed: runs keep their batches.
    one = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3, drop_last=True)
    one.set_epoch(1)
    assert [i for i, _ in whole] == list(one)[:8]  # 2 whole batches of 4; the last 2 images dropped
    shares = [list(EpochSampler(data, seed=3, epoch=1, batch=4, take=take)) for take in ([0, 2], [3, 1])]
    for b in range(2):  # each batch's shares: its positions, in the share's order, with the same sample seeds
        assert shares[0][2 * b:2 * b + 2] == [whole[4 * b], whole[4 * b + 2]]
        assert shares[1][2 * b:2 * b + 2] == [whole[4 * b + 3], whole[4 * b + 1]]
    assert list(EpochSampler(data, seed=3, epoch=1, batch=4, take=[0, 2], first_batch=1)) == shares[0][2:]
    assert list(EpochSampler(data, seed=3, epoch=2, batch=4, take=None)) != whole


def test_a_samples_draws_depend_on_its_seed_alone():
    data = SeededDataset(_Draws())
    first = data[(4, 123)]
    torch.rand(5)  # the global generator's state does not matter, nor is it changed
    state = torch.get_rng_state()
    assert data[(4, 123)] == first and data[(4, 124)] != first
    assert torch.equal(torch.get_rng_state(), state)


def test_the_largest_run_seed_gives_sample_seeds_torch_takes_and_smaller_ones_keep_theirs():
    data = SeededDataset(_Draws())
    keys = list(EpochSampler(data, seed=2**32 - 1, epoch=300, batch=10, take=None))  # a run's largest seed
    assert all(0 <= seed < 2**64 for _, seed in keys)
    assert len({data[key] for key in keys}) == 10  # each a draw of its own (torch.manual_seed raised past 2**64)
    small = EpochSampler(data, seed=3, epoch=1, batch=10, take=None)
    assert [seed for _, seed in small] == [(3 * 1_000_003 + 1) * 10_000_019 + i for i, _ in small]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("generator", [False, True])
def test_one_loader_kept_across_epochs_gives_the_batches_and_rng_of_a_loader_per_epoch(workers, generator):
    def per_epoch(e: int, start: int):  # what the recipes did before: a DataLoader per epoch
        return iter(DataLoader(SeededDataset(_Draws()), batch_size=3, sampler=EpochSampler(_Draws(), 7, e, 3, None,
                                                                                           start),
                               drop_last=True, num_workers=workers,
                               generator=torch.Generator().manual_seed(7) if generator else None))

    kept = EpochLoader(_Draws(), 7, 3, None, num_workers=workers,
                       generator=torch.Generator().manual_seed(7) if generator else None)

    def stream(make_epoch) -> tuple[list, torch.Tensor]:
        torch.manual_seed(0)
        batches = [b for e, start in ((0, 1), (1, 0), (2, 0)) for b in make_epoch(e, start)]
        return [(b[0].tolist(), b[1].tolist()) for b in batches], torch.rand(3)  # the global RNG after

    assert kept.loader.persistent_workers == (workers > 0)
    (old, rng_old), (new, rng_new) = stream(per_epoch), stream(kept)
    assert old == new and len(new) == 2 + 3 + 3
    assert torch.equal(rng_old, rng_new)
