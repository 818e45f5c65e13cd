"""The batch pipeline: crop/flip augmentation, normalisation, the resumable training stream, eval batches."""

from __future__ import annotations

import io

import pytest
import torch

from resrepro.data import BatchStream, ImageSet, eval_batches, normalizer, pixel_mean, random_crop_flip
from resrepro.errors import ResreproError

MEAN, STD = torch.full((3, 1, 1), 100.0), torch.full((3, 1, 1), 50.0)


def _windows(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Every pad-`pad` window of the zero-padded images, unflipped then flipped: (2·(2p+1)², N, C, H, W)."""
    n, c, h, w = images.shape
    canvas = torch.zeros(n, c, h + 2 * pad, w + 2 * pad, dtype=images.dtype)
    canvas[:, :, pad : pad + h, pad : pad + w] = images
    span = range(2 * pad + 1)
    windows = torch.stack([canvas[:, :, y : y + h, x : x + w] for y in span for x in span])
    return torch.cat([windows, windows.flip(-1)])


def _which_window(out: torch.Tensor, images: torch.Tensor, pad: int) -> torch.Tensor:
    """For each output image, the index into _windows() of the window it equals (asserting there is one)."""
    matches = (_windows(images, pad) == out).flatten(2).all(2)  # windows × N
    assert matches.any(0).all(), "an output is not a window of the padded input"
    return matches.int().argmax(0)


def test_crop_flip_outputs_are_windows_of_the_zero_padded_input(labelled_set):
    images = labelled_set(6).images  # values 1..255: a 0 in the output can only be padding
    out = random_crop_flip(images, 4, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    _which_window(out, images, 4)


def test_crop_flip_draws_every_offset_and_both_flips(labelled_set):
    images = labelled_set(2000, size=6).images
    found = _which_window(random_crop_flip(images, 4, torch.Generator().manual_seed(1)), images, 4)
    offsets, flipped = found % 81, found >= 81
    assert offsets.unique().numel() == 81
    assert 0.45 < flipped.float().mean() < 0.55
    assert (found == 40).any()  # the centred, unflipped window (the original image) occurs too


def test_crop_flip_is_reproducible_and_follows_its_options(labelled_set):
    images = labelled_set(16).images

    def draw(seed: int, **options) -> torch.Tensor:
        return random_crop_flip(images, 4, torch.Generator().manual_seed(seed), **options)

    assert torch.equal(draw(3), draw(3)) and not torch.equal(draw(3), draw(4))
    assert (_which_window(draw(5, flip=False), images, 4) < 81).all()
    assert torch.equal(random_crop_flip(images, 0, torch.Generator(), flip=False), images)


def test_pixel_mean_is_the_training_mean(labelled_set):
    images = labelled_set(2500, size=4).images
    expected = images.double().mean(0)
    mean = pixel_mean(images)
    assert mean.dtype == torch.float32 and mean.shape == (3, 4, 4)
    assert torch.allclose(mean.double(), expected, atol=1e-4, rtol=0)


def test_normalizer_modes(labelled_set):
    train = labelled_set(300, size=4)
    mean, std = normalizer(train, "pixel-mean")
    assert mean.shape == (3, 4, 4) and std.shape == () and std.item() == 255.0
    mean, std = normalizer(train, "mean-std")
    assert mean.shape == std.shape == (3, 1, 1)
    pixels = train.images.double().transpose(0, 1).flatten(1)
    assert torch.allclose(mean.double().flatten(), pixels.mean(1), atol=1e-4, rtol=0)
    assert torch.allclose(std.double().flatten(), pixels.std(1, correction=0), atol=1e-4, rtol=0)
    with pytest.raises(ResreproError, match="pixel-mean"):
        normalizer(train, "zca")


def _stream(data: ImageSet, batch_size: int = 10, seed: int = 0, **kwargs) -> BatchStream:
    return BatchStream(data, batch_size, device="cpu", seed=seed, mean=MEAN, std=STD, **kwargs)


def test_each_epoch_is_a_permutation_with_the_tail_dropped(labelled_set):
    stream = _stream(labelled_set(53))  # 5 full batches of 10, 3 images dropped per epoch
    dropped = []
    for epoch in range(3):
        assert stream.epoch == epoch
        seen = torch.cat([next(stream)[1] for _ in range(5)])
        assert seen.unique().numel() == 50  # no image twice within an epoch
        dropped.append(set(range(53)) - set(seen.tolist()))
    assert stream.epoch == 3
    assert len(set(map(frozenset, dropped))) > 1  # a fresh permutation each epoch


def test_batches_are_normalised_images_on_the_device(labelled_set):
    data = labelled_set(20)
    images, labels = next(_stream(data, augment=False))
    assert images.dtype == torch.float32 and images.shape == (10, 3, 8, 8) and labels.dtype == torch.int64
    assert torch.equal(images, (data.images[labels].float() - MEAN) / STD)
    augmented, labels = next(_stream(data, seed=1, channels_last=True))
    assert augmented.is_contiguous(memory_format=torch.channels_last)
    crops = (augmented * STD + MEAN).round().to(torch.uint8)
    _which_window(crops, data.images[labels], 4)


def test_seeds_give_different_streams(labelled_set):
    data = labelled_set(40)
    assert not torch.equal(next(_stream(data, seed=0))[1], next(_stream(data, seed=1))[1])


@pytest.mark.parametrize("taken", [0, 3, 5, 7, 12])
def test_resume_is_bit_identical(labelled_set, taken):
    data = labelled_set(53)
    reference = _stream(data, seed=7)
    batches = [next(reference) for _ in range(18)]  # 5 batches per epoch: crosses several epoch boundaries

    interrupted = _stream(data, seed=7)
    for _ in range(taken):
        next(interrupted)
    buffer = io.BytesIO()
    torch.save(interrupted.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    resumed = _stream(data, seed=99)  # the state, not the seed, decides what follows
    resumed.load_state_dict(state)
    assert resumed.epoch == taken // 5
    for expected_images, expected_labels in batches[taken:]:
        images, labels = next(resumed)
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_resume_refuses_a_different_stream(labelled_set):
    state = _stream(labelled_set(53)).state_dict()
    with pytest.raises(ResreproError, match="same dataset, batch size"):
        _stream(labelled_set(53), batch_size=8).load_state_dict(state)


def test_batch_larger_than_the_set_is_refused(labelled_set):
    with pytest.raises(ResreproError, match="batch size"):
        _stream(labelled_set(5))


def test_eval_batches_cover_the_set_in_order(labelled_set):
    data = labelled_set(23)
    batches = list(eval_batches(data, 10, device="cpu", mean=MEAN, std=STD))
    assert [len(labels) for _, labels in batches] == [10, 10, 3]
    images = torch.cat([images for images, _ in batches])
    assert torch.equal(torch.cat([labels for _, labels in batches]), data.labels)
    assert torch.equal(images, (data.images.float() - MEAN) / STD)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_stream_matches_cpu_stream(labelled_set):
    data = labelled_set(53)
    cpu = _stream(data, seed=3)
    gpu = BatchStream(data, 10, device="cuda", seed=3, mean=MEAN, std=STD, channels_last=True)
    for _ in range(12):
        (cpu_images, cpu_labels), (gpu_images, gpu_labels) = next(cpu), next(gpu)
        assert gpu_images.is_cuda and torch.equal(gpu_labels.cpu(), cpu_labels)
        assert torch.equal(gpu_images.cpu(), cpu_images)
    images = data.images.cuda()
    assert torch.equal(
        random_crop_flip(images, 4, torch.Generator().manual_seed(0)).cpu(),
        random_crop_flip(data.images, 4, torch.Generator().manual_seed(0)),
    )
