"""One tally of an evaluation, for every family and protocol: loss, top-1 and top-5 misses, images."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn import functional as F


class Tally:
    """Float64 sums kept on the device, so adding a batch costs no host sync; ``top5`` where the family
    reports it (ImageNet), counted as top-min(5, classes) on fewer classes. ``keep``: also keep each image's
    class probabilities, in order, for an ensemble to average (:meth:`probabilities`)."""

    def __init__(self, device: torch.device | str, top5: bool = True, keep: bool = False) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top-1 misses, top-5 misses, images
        self.top5 = top5
        self.kept: list[tuple[torch.Tensor, torch.Tensor]] | None = [] if keep else None

    def add_logits(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        logits = logits.float()
        self._keep(lambda: logits.softmax(dim=1), targets)
        self._add(F.cross_entropy(logits, targets, reduction="sum"), logits, targets)

    def add_probs(self, probs: torch.Tensor, targets: torch.Tensor) -> None:
        """Averaged probabilities (10 crops, several scales): the loss is the negative log of the true class's."""
        self._keep(lambda: probs.float(), targets)
        true = probs.gather(1, targets[:, None]).clamp_min(torch.finfo(torch.float32).tiny)
        self._add(-true.log().sum(), probs, targets)

    def _keep(self, probs, targets: torch.Tensor) -> None:
        if self.kept is not None:  # on the host: an ImageNet val set's probabilities are 200 MB per net
            self.kept.append((probs().cpu(), targets.cpu()))

    def probabilities(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image's class probabilities (N×K, float32) and target (N), in the order they were added."""
        if not self.kept:
            raise ValueError("this tally kept no probabilities (Tally(keep=True), and at least one batch)")
        return torch.cat([p for p, _ in self.kept]), torch.cat([t for _, t in self.kept])

    def _add(self, loss: torch.Tensor, scores: torch.Tensor, targets: torch.Tensor) -> None:
        top = scores.topk(min(5 if self.top5 else 1, scores.shape[1]), dim=1).indices
        misses = top != targets[:, None]
        self.sums[:3] += torch.stack([loss.double(), misses[:, 0].sum().double(), misses.all(dim=1).sum().double()])
        self.sums[3] += len(targets)  # a host number: torch.tensor(n, device="cuda") copies from the host each batch

    def all_reduce(self) -> Tally:
        """Sum over the ranks of a process group (each evaluated its own share of the images)."""
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.sums)
        return self

    @property
    def images(self) -> int:
        return int(self.sums[3].item())

    def result(self) -> dict[str, float | int]:
        """``loss`` (mean), ``top1_error`` and ``top5_error`` (fractions), ``images``; NaNs for no image."""
        loss, top1, top5, n = self.sums.tolist()
        d = max(n, 1.0)
        out = {"loss": loss / d if n else float("nan"), "top1_error": top1 / d if n else float("nan"),
               "images": int(n)}
        if self.top5:
            out["top5_error"] = top5 / d if n else float("nan")
        return out
