"""Where and how a run computes: device, precision, memory layout, compilation, ranks, stop signals, RNG state,
peak memory. (What a run shows while it computes is :mod:`resrepro.train.progress`.)"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from resrepro.errors import ResreproError


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):  # torch also names meta, xla, ...: none trains here
        raise ResreproError(f"--device {device!r} is not a device: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ResreproError(f"--device {device}: no CUDA device is available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ResreproError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s), "
                            f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return dev


def autocast(precision: str, device: torch.device):
    """bf16 autocast where asked, or by default on CUDA; fp32 otherwise."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


@contextmanager
def evaluating(model: nn.Module, precision: str, device: torch.device,
               channels_last: bool) -> Iterator[Callable[[Any], Any]]:
    """The one way every evaluation runs a net — CIFAR's, ImageNet's in training and under its test protocols
    (center, 10-crop, multi-scale), detection's: ``forward(x)`` in eval mode, without autograd, at the run's own
    precision (:func:`autocast`: bf16 on CUDA unless ``--precision fp32``) and memory layout (channels_last on
    CUDA unless turned off), the model's mode restored after. The run's own policy, not a stricter one, so the
    in-training evaluation and `resrepro eval` of the same weights give the same numbers. A list input
    (detection's images of different sizes) keeps its layout."""
    was_training = model.training
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)

    def forward(x: Any) -> Any:
        if channels_last and isinstance(x, torch.Tensor):
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(precision, device):
            return model(x)

    try:
        with torch.no_grad():
            yield forward
    finally:
        model.train(was_training)


def use_channels_last(choice: bool | None, device: torch.device, on_cpu: bool = False) -> bool:
    """NHWC activations: ``choice``, else on CUDA, where tensor-core convolutions want them, and on a CPU where
    ``on_cpu`` (a family whose shapes were measured faster there and safe: :attr:`Family.channels_last_on_cpu`).
    A run's record (config.json, a checkpoint) holds the layout it trains in; one whose record says None dates from
    before, when every family's CPU default was NCHW: it is read with ``on_cpu`` False."""
    return choice if choice is not None else device.type == "cuda" or on_cpu


def use_compile(choice: bool | None, device: torch.device, fixed_shapes: bool = True) -> bool:
    """torch.compile: by default on CUDA for a family whose training batches have one shape; never by default for
    variable shapes (detection's images), where every new shape would compile anew."""
    return choice if choice is not None else device.type == "cuda" and fixed_shapes


# Above this many residual blocks (ResNet-1202 has 600) the net is compiled block by block: one graph per kind of
# block (a few), not one graph of the whole depth (minutes and GBs of host memory for ResNet-1202).
REGIONAL_ABOVE_BLOCKS = 100


def compile_model(model: nn.Module, wrap: Callable[[nn.Module], nn.Module]) -> tuple[nn.Module, nn.Module]:
    """(the DDP-wrapped module, the module training calls), compiled; ``wrap``: DDP's wrapper, or the identity in
    one process (whole-graph compilation wraps DDP, whose graph dynamo splits at the gradient buckets; the regional
    view is wrapped by it). The whole net in one graph, or, for a deep net or one that
    checkpoints its stages (the checkpoint's recompute stays eager, around compiled blocks), a view of the net
    whose residual blocks are compiled one by one (regional compilation). Either shares the net's parameters and
    buffers; the net itself stays uncompiled, for evaluation, so eval mode and other batch sizes never recompile
    the training graph. ``dynamic=False``: every block kind keeps a static-shape graph (dynamo would otherwise
    turn to dynamic shapes at the second block shape it meets)."""
    from resrepro.models.blocks import BasicBlock, Bottleneck

    blocks = sum(isinstance(m, (BasicBlock, Bottleneck)) for m in model.modules())
    if not (getattr(model, "grad_checkpoint", False) or blocks > REGIONAL_ABOVE_BLOCKS):
        ddp = wrap(model)
        return ddp, torch.compile(ddp, dynamic=False)

    def view(module: nn.Module) -> nn.Module:
        if isinstance(module, (BasicBlock, Bottleneck)):
            return torch.compile(module, dynamic=False)
        copy = module.__class__.__new__(module.__class__)
        copy.__dict__ = dict(module.__dict__)  # the same parameter and buffer dicts: the same tensors
        copy._modules = {name: None if child is None else view(child) for name, child in module._modules.items()}
        return copy

    ddp = wrap(view(model))
    return ddp, ddp


def use_cudnn_benchmark(fixed_shapes: bool, device: torch.device) -> bool:
    """cuDNN's kernel autotuning: on CUDA for a family whose training batches all have one shape (CIFAR, ImageNet's
    crops), never for variable shapes (detection, multi-scale testing), where every new shape is timed anew."""
    return fixed_shapes and device.type == "cuda"


@contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark = enabled`` for the block, then as it was (a later evaluation in the same
    process, of other shapes, is not autotuned)."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


@contextmanager
def threads_kept() -> Iterator[None]:
    """The process's CPU thread count as it was, after the block (a resumed run sets the one it started with)."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


def all_finite(model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """Whether every weight, BN statistic and momentum buffer is finite, with one host sync for all."""
    tensors = [*model.state_dict().values(), *(s["momentum_buffer"] for s in optimizer.state.values()
                                               if s.get("momentum_buffer") is not None)]
    return bool(torch.stack([t.isfinite().all() for t in tensors if t.is_floating_point()]).all())


def peak_memory(device: torch.device) -> int:
    """Peak bytes: allocated on the GPU, or the process's peak resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rng_state(device: torch.device) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None}


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"])


def all_reduce(t: torch.Tensor, world: int) -> torch.Tensor:
    """Sum ``t`` over the ranks, in place (nothing to do for one process)."""
    if world > 1:
        dist.all_reduce(t)
    return t


def agreed_stop(requested: bool, step: int, world: int, device: torch.device, every: int) -> bool:
    """Whether to checkpoint and stop after ``step``, the same answer on every rank.

    A rank that stopped alone would leave the others waiting in the next collective. The ranks agree every
    ``every`` steps, not every step: reading the all-reduced flag would stall the GPU queue each step.
    A stop requested in between (SIGTERM/Ctrl-C reach the ranks at different steps) waits for the next one.
    """
    if world == 1:
        return requested
    if step % every:
        return False
    return bool(all_reduce(torch.tensor(float(requested), device=device), world).item())


class TrainingInterrupted(ResreproError):
    """Ctrl-C, SIGTERM or SIGUSR2: the checkpoint was saved; rerunning the same command resumes."""

    # Which stop it was, set by :func:`stop_requests`: Ctrl-C is the user's own (exit 130, not an error); SIGTERM
    # is Slurm's preemption, requeue or cancellation, and SIGUSR2 its warning of a time limit ahead (sbatch
    # --signal, as submitit asks for it), which a scheduler reads from exit code 2.
    signal: int | None = None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


@contextmanager
def stop_requests() -> Iterator[dict[str, int | None]]:
    """Turn the first SIGINT/SIGTERM/SIGUSR2 into a flag the loop checks after each step (then save and raise
    :class:`TrainingInterrupted`, which leaves here naming the signal). The handlers that were there before
    (a Slurm task's, submitit's) are back once the block ends."""
    flag: dict[str, int | None] = {"signal": None}

    def handler(signum, frame):
        if flag["signal"] is None:  # the first says why: a requeue's SIGTERM after a time limit's USR2 is its echo
            flag["signal"] = signum

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield flag
    except TrainingInterrupted as e:
        e.signal = flag["signal"]
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def tensorboard() -> type:
    """TensorBoard's SummaryWriter class; asked for before a run writes anything, so a run that cannot log
    where it was told to leaves nothing behind."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ResreproError("--tensorboard needs the tensorboard package: "
                            "pip install 'resrepro[tensorboard]'") from None
    return SummaryWriter
