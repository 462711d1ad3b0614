"""Random weights for the independent PyTorch models the converter tests build."""
import numpy as np


def randomize(module, seed, gain=1.0):
    """Every BatchNorm / LayerNorm gets a random affine (and BN random running
    statistics), every Conv2d / Linear uniform weights in ±gain/√fan_in; returns the
    module in eval mode. Deterministic in `seed`."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                n = m.weight.numel()
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                    m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
                    m.num_batches_tracked.fill_(1000)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                bound = gain / np.sqrt(m.weight[0].numel())
                m.weight.uniform_(-bound, bound, generator=gen)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=gen)
    return module.eval()
