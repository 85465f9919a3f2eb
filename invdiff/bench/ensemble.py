r"""The mean of ``K`` chains run as one batch: one wrapper for any benchmark method.

PSNR rewards the posterior mean :math:`\mathbb{E}[x \mid y]`; one chain of a diffusion sampler returns (close
to) one posterior sample. Run as one batch, ``K`` chains cost the same number of network calls as one chain
(each call pushes ``K`` images per measurement through the network), and their mean

.. math::  \bar x = \frac{1}{K} \sum_{j=1}^{K} x^{(j)}, \qquad x^{(j)} \sim p(x \mid y) \text{ (approximately)}

has the posterior variance divided by ``K``: for an exact sampler
:math:`\mathbb{E}\|\bar x - x\|^2 = \mathbb{E}\|\mathbb{E}[x|y] - x\|^2 + \frac{1}{K}\operatorname{tr}\operatorname{Cov}(x|y)`.

:func:`ensemble_method` turns a benchmark :class:`~invdiff.bench.methods.Method` into its mean-of-``K``
version: the measurement batch ``y`` ``(B, ...)`` is repeated ``K`` times along the batch dimension (chain
``j`` of measurement ``b`` at row ``j B + b``, the layout of ``Solver.reconstruct(n_samples=K)``), the base
method runs once on the ``K B`` measurements with its usual budget, and the ``K`` outputs per measurement are
its samples ``(K, B, ...)``; the score is taken on their mean, the benchmark's 90 % coverage on the samples.
Net calls stay the base method's (``nfe``); net evaluations per image are ``K * nfe``. The same wrapper serves
invdiff's solvers and deepinv's, so both sides get the same number of chains and evaluations.

The operator is shared by the ``K B`` rows (the benchmark's operators broadcast over the batch). Batched
chains are independent except where a method's inner loop stops on the whole batch: deepinv's conjugate
gradients (``physics.prox_l2`` on CT) stop when *every* row has converged, so a row may get more CG iterations
than it would alone (never fewer).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from torch import Tensor

DEFAULT_CHAINS = 8


def mean_of_chains(runner: Callable, k: int = DEFAULT_CHAINS) -> Callable:
    """A method runner ``(prior, op, y, nfe, seed, params) -> Output`` that runs ``runner`` on ``k`` copies of
    every measurement in one batch and returns the mean of the ``k`` outputs (``x``) and the outputs (``samples``,
    ``(k, B, ...)``).

    The base runner's ``Output`` is returned with ``x``, ``samples`` and ``info`` replaced (``info["chains"]``
    is ``k``); its own ``samples``, if any, are dropped.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected a number of chains, an integer >= 1, got {k!r}")

    def run(prior, op, y: Tensor, nfe: int, seed: int, params: dict) -> Any:
        B = y.shape[0]
        y_k = y.repeat(k, *([1] * (y.ndim - 1)))  # row j * B + b: chain j of measurement b
        out = runner(prior, op, y_k, nfe, seed, params)
        if out.x.shape[0] != k * B:
            raise RuntimeError(f"mean_of_chains: the base method returned {out.x.shape[0]} estimates for {k * B} "
                               f"measurements ({k} chains x {B}); expected one per measurement")
        samples = out.x.reshape(k, B, *out.x.shape[1:])
        return dataclasses.replace(out, x=samples.mean(0), samples=samples,
                                   info={**out.info, "chains": k})

    return run


def ensemble_key(base_key: str, k: int = DEFAULT_CHAINS) -> str:
    """The benchmark key of the mean-of-``k`` version of ``base_key``: ``dds`` -> ``dds-mean8``."""
    return f"{base_key}-mean{k}"


def ensemble_method(base, k: int = DEFAULT_CHAINS):
    """The mean-of-``k`` version of the benchmark method ``base`` (a :class:`~invdiff.bench.methods.Method`).

    Same family, same applicability and availability; key :func:`ensemble_key`, runner :func:`mean_of_chains`.

    Example
    -------
    >>> from invdiff.bench.methods import METHODS
    >>> m = ensemble_method(METHODS["dds"], 8)
    >>> m.key, m.family
    ('dds-mean8', 'invdiff')
    """
    return dataclasses.replace(
        base, key=ensemble_key(base.key, k), name=f"{base.name} (mean of {k})",
        nfe_rule=f"{base.nfe_rule}; {k} chains per call (net evals = {k} x NFE), scored: their mean",
        runner=mean_of_chains(base.runner, k))
