"""Sampling for loader-worker datasets: an epoch's shards and a resume mid-epoch, per-sample seeded draws."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from resrepro.data.samplers import EpochSampler, SeededDataset


class _Draws(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> tuple[int, float]:
        return index, torch.rand(()).item()


def test_epoch_shards_are_disjoint_and_a_resume_continues_the_same_order():
    data = _Draws()
    shards = [list(EpochSampler(data, seed=3, epoch=1, rank=r, world=2)) for r in range(2)]
    indices = [i for shard in shards for i, _ in shard]
    assert len(indices) == len(set(indices)) == 10
    assert list(EpochSampler(data, seed=3, epoch=1, rank=0, world=2, start=2)) == shards[0][2:]
    assert list(EpochSampler(data, seed=3, epoch=2, rank=0, world=2)) != shards[0]


def test_a_samples_draws_depend_on_its_seed_alone():
    data = SeededDataset(_Draws())
    first = data[(4, 123)]
    torch.rand(5)  # the global generator's state does not matter, nor is it changed
    state = torch.get_rng_state()
    assert data[(4, 123)] == first and data[(4, 124)] != first
    assert torch.equal(torch.get_rng_state(), state)


def test_the_largest_run_seed_gives_sample_seeds_torch_takes_and_smaller_ones_keep_theirs():
    data = SeededDataset(_Draws())
    keys = list(EpochSampler(data, seed=2**32 - 1, epoch=300, rank=0, world=1))  # a run's largest seed
    assert all(0 <= seed < 2**64 for _, seed in keys)
    assert len({data[key] for key in keys}) == 10  # each a draw of its own (torch.manual_seed raised past 2**64)
    small = EpochSampler(data, seed=3, epoch=1, rank=0, world=1)
    assert [seed for _, seed in small] == [(3 * 1_000_003 + 1) * 10_000_019 + i for i, _ in small]
