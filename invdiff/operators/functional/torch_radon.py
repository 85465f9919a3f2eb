"""deepinv's ``Tomography`` in invdiff's sinogram layout and conventions (the CT operator's ``"torch"`` backend).

The slice is zero-padded to a square whose centre is the rotation axis; the fan-beam sinogram is
weighted by ``sqrt(1 + u^2 / (D_s + D_d)^2)``, the ray length per sample, so that the result is a
line integral as ASTRA's. See :mod:`invdiff.operators.ct` for what this backend supports.
"""

from __future__ import annotations

import math

import deepinv as dinv
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from invdiff.operators.functional.astra_ct import Geometry2D


class TorchRadon(torch.nn.Module):
    """deepinv's ``Tomography`` on a zero-padded square, in our sinogram layout and conventions."""

    def __init__(self, g: Geometry2D):
        super().__init__()
        H, W, n = g.height, g.width, g.n_detectors
        if (H - W) % 2:
            raise ValueError(f"img_size: backend='torch' needs H and W of the same parity (it pads to a centred "
                             f"square), got H={H}, W={W}; use backend='astra'")
        Q = math.ceil(math.hypot(H, W)) + 2  # the slice, and its interpolation support, fit in the inscribed circle
        if not g.is_fan:
            if g.detector_spacing != 1.0:
                raise ValueError(f"detector_spacing: backend='torch' supports only 1.0 for parallel beam, got "
                                 f"{g.detector_spacing!r}; use backend='astra'")
            if (n - W) % 2:
                raise ValueError(f"n_detectors: backend='torch' needs n_detectors of the parity of W={W} for parallel "
                                 f"beam (to centre the detector), got {n}; use {n + 1} or backend='astra'")
            Q = max(Q, n)
        Q += (Q - W) % 2
        self.pad_h, self.pad_w, self.Q = (Q - H) // 2, (Q - W) // 2, Q
        self.crop = 0 if g.is_fan else (Q - n) // 2
        deg = np.degrees(np.asarray(g.angles))
        kw = {}
        if g.is_fan:
            if g.source_distance <= (Q - 1) / 2:
                raise ValueError(f"source_distance: backend='torch' needs more than {(Q - 1) / 2} (half its padded "
                                 f"grid) for a {H}x{W} slice, got {g.source_distance!r}")
            deg = deg + 90.0  # deepinv's fan beam starts a quarter turn later
            kw = dict(fan_beam=True, fan_parameters=dict(
                pixel_spacing=(Q - 1) / Q,  # deepinv maps lengths by 2 / (Q * spacing); grid step is 2 / (Q - 1)
                source_radius=g.source_distance, detector_radius=g.detector_distance,
                n_detector_pixels=n, detector_spacing=g.detector_spacing))
            L = g.source_distance + g.detector_distance
            w = torch.as_tensor(np.sqrt(1.0 + (g.detector_positions / L) ** 2), dtype=torch.float32)
            self.register_buffer("ray_weights", w)  # deepinv sums samples one pixel apart along x, not along the ray
        else:
            self.ray_weights = None
        # normalize=False given explicitly: deepinv warns only when it is left unset
        self.tomo = dinv.physics.Tomography(angles=torch.as_tensor(deg, dtype=torch.float32), img_width=Q,
                                            circle=True, normalize=False, adjoint_via_backprop=True, **kw)
        self.n = n
        self._adjoints: dict = {}

    def _on(self, device: torch.device) -> None:
        if self.tomo.angles.device != device:
            self.to(device)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, H, W) -> (N, K, n)``."""
        self._on(x.device)
        z = F.pad(x.to(torch.float32)[:, None], (self.pad_w, self.pad_w, self.pad_h, self.pad_h))
        s = self.tomo.A(z)[:, 0].transpose(-2, -1)  # deepinv: (N, 1, n, K)
        if self.crop:
            s = s[..., self.crop:self.crop + self.n]
        if self.ray_weights is not None:
            s = s * self.ray_weights
        return s

    def adjoint(self, y: Tensor) -> Tensor:
        """``(N, K, n) -> (N, H, W)``, the exact adjoint of :meth:`forward`."""
        self._on(y.device)
        s = y.to(torch.float32)
        if self.ray_weights is not None:
            s = s * self.ray_weights
        if self.crop:
            s = F.pad(s, (self.crop, self.crop))
        s = s.transpose(-2, -1)[:, None].contiguous()
        # the exact adjoint of tomo.A by autograd (deepinv's public adjoint_function), built once per shape
        # and device here rather than through Tomography.A_adjoint, whose cache has no device key
        key = (id(self.tomo), s.shape[0], s.device)  # a deep copy of this module builds its own
        if key not in self._adjoints:
            self._adjoints[key] = dinv.physics.adjoint_function(self.tomo.A, (s.shape[0], 1, self.Q, self.Q),
                                                                device=s.device, dtype=torch.float32)
        x = self._adjoints[key](s)[:, 0]
        return x[..., self.pad_h:self.Q - self.pad_h, self.pad_w:self.Q - self.pad_w]
