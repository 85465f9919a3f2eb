"""How much z context the 32x64x64 ellipsoid phantoms offer the 2D prior (numbers in docs/prior3d.md).

Prints, per tuning volume and sigma, the PSNR (data range 1) of the slice-wise 2D prior ``D2s``, of the
z-averaged estimates ``E_3`` and ``E_5`` (:meth:`invdiff.priors.SliceResidualDenoiser.estimates`), of the
clean volume averaged over 3 slices, and of an oracle that takes, voxel by voxel, whichever of the three
estimates is closest to the truth (an upper bound for a network that only selects).

    python data_scripts/check_z_context.py
"""

import torch

from invdiff import data, metrics, priors
from invdiff.priors import UNet, UNetConfig
from invdiff.priors.slice_residual import z_mean

torch.set_num_threads(1)
net = UNet(UNetConfig(in_channels=7, channels=(8, 16), dims=3))  # unused here: only .estimates is called
D = priors.SliceResidualDenoiser(priors.load("phantom-ct-64"), net, z_windows=(3, 5))
vols = torch.cat([data.ellipsoids((32, 64, 64), seed=s) for s in (777002, 777003)])
for i in range(len(vols)):
    print(f"tuning volume {i}: clean M_3 x0 {float(metrics.psnr(z_mean(vols[i:i + 1], 3)[0], vols[i:i + 1], 1.0)):.2f} dB")
for sigma in (0.1, 0.2):
    noisy = vols + sigma * torch.randn(vols.shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        for i in range(len(vols)):
            est = D.estimates(noisy[i : i + 1], sigma)
            ps = [float(metrics.psnr(est[:, j : j + 1], vols[i : i + 1], data_range=1.0)) for j in range(3)]
            pick = est.gather(1, (est - vols[i : i + 1]).abs().argmin(1, keepdim=True))
            oracle = float(metrics.psnr(pick, vols[i : i + 1], data_range=1.0))
            print(f"sigma {sigma} volume {i}: D2s {ps[0]:.2f}  E3 {ps[1]:.2f}  E5 {ps[2]:.2f}  oracle {oracle:.2f}", flush=True)
