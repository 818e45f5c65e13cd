"""Sampling for loader-worker datasets: an epoch's shards and a resume mid-epoch, per-sample seeded draws."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from resrepro.data.samplers import EpochLoader, EpochSampler, SeededDataset


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


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("generator", [False, True])
def test_one_loader_kept_across_epochs_gives_the_batches_and_rng_of_a_loader_per_epoch(workers, generator):
    def per_epoch(e: int, start: int):  # what the recipes did before: a DataLoader per epoch
        return iter(DataLoader(SeededDataset(_Draws()), batch_size=3, sampler=EpochSampler(_Draws(), 7, e, 0, 1,
                                                                                           start * 3),
                               drop_last=True, num_workers=workers,
                               generator=torch.Generator().manual_seed(7) if generator else None))

    kept = EpochLoader(_Draws(), 7, 0, 1, 3, num_workers=workers,
                       generator=torch.Generator().manual_seed(7) if generator else None)

    def stream(make_epoch) -> tuple[list, torch.Tensor]:
        torch.manual_seed(0)
        batches = [b for e, start in ((0, 1), (1, 0), (2, 0)) for b in make_epoch(e, start)]
        return [(b[0].tolist(), b[1].tolist()) for b in batches], torch.rand(3)  # the global RNG after

    assert kept.loader.persistent_workers == (workers > 0)
    (old, rng_old), (new, rng_new) = stream(per_epoch), stream(kept)
    assert old == new and len(new) == 2 + 3 + 3
    assert torch.equal(rng_old, rng_new)
