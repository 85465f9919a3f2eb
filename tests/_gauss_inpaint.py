"""A small exact-posterior problem shared by the SMC tests: a Gaussian prior on 4x4 images, half the pixels
observed with Gaussian noise of std ``s_y``; returns ``(prior, op, y, exact posterior)``."""

import torch

from invdiff.operators import Inpainting
from invdiff.priors.analytic import GaussianPrior


def gauss_inpaint_problem(s_y: float, B: int = 2, seed: int = 0):
    img = (1, 4, 4)
    prior = GaussianPrior(torch.linspace(0.2, 0.8, 16).reshape(img), 0.2)
    mask = torch.zeros(img)
    mask.view(-1)[::2] = 1
    op = Inpainting(img, mask=mask, noise_std=s_y)
    g = torch.Generator().manual_seed(seed)
    x = prior.sample(B, generator=g).to(torch.float32)
    y = op.A(x) + s_y * torch.randn(op.A(x).shape, generator=g)
    return prior, op, y, prior.posterior(op, y, s_y)
