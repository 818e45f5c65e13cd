"""ResNet-1202 with --grad-checkpoint trains to the same losses as without it (issue: the 1202-layer run)."""

import copy

import torch
from torch.nn import functional as F

from resrepro.models import create_model


def _train_losses(model, batches, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    losses = []
    for x, y in batches[:steps]:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_resnet1202_grad_checkpoint_matches_plain_training_on_cpu():
    torch.manual_seed(0)
    plain = create_model("resnet1202")
    ckpt = copy.deepcopy(plain)
    ckpt.grad_checkpoint = True
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(2, 3, 32, 32, generator=g), torch.randint(0, 10, (2,), generator=g)) for _ in range(3)]
    a, b = _train_losses(plain, batches), _train_losses(ckpt, batches)
    assert a == b or torch.allclose(torch.tensor(a), torch.tensor(b), rtol=1e-5, atol=1e-6)
    assert a[0] != a[-1]  # the weights really moved
    # BN running statistics saw each batch once, not twice (the recompute must not update them).
    for (name, x), (_, y) in zip(plain.named_buffers(), ckpt.named_buffers(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)
