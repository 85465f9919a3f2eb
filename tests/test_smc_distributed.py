"""SMC and AFDPS with their particles split over torch.distributed ranks (invdiff.distributed.particles).

The main test runs this file under ``torchrun`` with 2 Gloo ranks (``python -m torch.distributed.run --standalone
--nproc-per-node 2 tests/test_smc_distributed.py OUT``) and compares every rank's result with the same run in one
process: log-weights, ESS and resampling history, prior-std history, final particles, mean and samples, to 1e-5.
The problem (the exact-posterior benchmark's three-mode Gaussian mixture, 8 x 8 inpainting, two measurements)
makes the weights uneven, so the runs resample at some steps (checked), which is where the ranks exchange
particles.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from invdiff.distributed.particles import ParticleSplit, ParticleStreams, particle_seed

N, STEPS, SEED = 8, 24, 5


def _problem():
    from invdiff.bench.exact_posterior import make_problem

    pb = make_problem()
    noise = 0.05 * torch.randn(pb.y.shape, generator=torch.Generator().manual_seed(1))
    return pb.prior, pb.op, torch.cat([pb.y, pb.y + noise])  # B = 2 measurements


def _solvers(prior):
    from invdiff.solvers import AFDPS, SMC

    # SMC's default proposal keeps the weights nearly equal here; ess_threshold=0.99 makes it resample (4-5 times)
    return {"smc": SMC(prior, particles=N, steps=STEPS, ess_threshold=0.99),  # prior_std="auto": all-reduced sums
            "smc_gradient": SMC(prior, particles=N, steps=STEPS, proposal="gradient"),
            "afdps": AFDPS(prior, particles=N, steps=STEPS)}


def _run_all(n_samples: int = 6) -> dict:
    prior, op, y = _problem()
    out = {}
    for name, solver in _solvers(prior).items():
        r = solver.reconstruct(y, op, n_samples=n_samples, seed=SEED, progress=False)
        out[name] = {"mean": r.mean, "samples": r.samples, "nfe": torch.tensor(r.nfe),
                     **{k: r.info[k] for k in ("log_w", "ess", "resampled", "prior_std", "particles", "final_ess")}}
    return out


def _ranks_main(out_dir: str) -> None:
    """Body of each torchrun rank: the runs, then a measurement that differs between ranks (must be refused)."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    res = _run_all()
    prior, op, y = _problem()
    try:
        _solvers(prior)["smc"].reconstruct(y + rank, op, seed=SEED, progress=False)
        res["refused"] = ""
    except ValueError as e:
        res["refused"] = str(e)
    torch.save(res, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


# ----------------------------------------------------------------------------- in one process
def test_particle_streams_do_not_depend_on_the_split():
    """Slot j's draws are the same whichever rank (which index range) holds it; other seeds or slots differ."""
    full = ParticleStreams(3, ParticleSplit(8, 0, 1).global_indices(2))  # B = 2 ensembles of 8
    a = full.randn((16, 5))
    halves = [ParticleStreams(3, ParticleSplit(8, r, 2).global_indices(2)).randn((8, 5)) for r in (0, 1)]
    # rank r holds rows b * 8 + [4 r, 4 r + 4) of the one-process layout
    for r, h in enumerate(halves):
        rows = torch.cat([torch.arange(b * 8 + 4 * r, b * 8 + 4 * r + 4) for b in range(2)])
        assert torch.equal(h, a[rows])
    assert not torch.equal(a, ParticleStreams(4, torch.arange(16)).randn((16, 5)))
    assert len({tuple(row.tolist()) for row in a}) == 16  # every slot its own stream
    assert particle_seed(0, 1) != particle_seed(1, 0)


def test_split_layout_and_bad_sizes():
    s = ParticleSplit(8, 1, 4)
    assert (s.n, s.start, s.stop) == (2, 2, 4)
    assert s.global_indices(2).tolist() == [2, 3, 10, 11]
    with pytest.raises(ValueError, match="shape: expected 2 rows"):
        ParticleStreams(0, torch.arange(2)).randn((3, 1))


def test_split_particles_must_divide(monkeypatch):
    import invdiff.distributed.particles as particles
    from invdiff.solvers import SMC

    monkeypatch.setattr(particles, "distributed_world", lambda: (0, 3))
    prior, op, y = _problem()
    with pytest.raises(ValueError, match="particles: 8 particles cannot be split evenly over 3"):
        SMC(prior, particles=8, steps=2).reconstruct(y, op, progress=False)
    with pytest.raises(ValueError, match="split_particles"):
        SMC(prior, split_particles="yes")
    # split_particles=False: the whole ensemble here, whatever the world
    r = SMC(prior, particles=8, steps=2, split_particles=False).reconstruct(y, op, progress=False)
    assert r.info["particles"].shape[:2] == (2, 8)


# ----------------------------------------------------------------------------- 2 Gloo ranks
def test_two_gloo_ranks_match_one_process(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(Path(__file__).resolve()), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    ref = _run_all()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert "differs between the 2 torch.distributed ranks" in got.pop("refused")
        for name, want in ref.items():
            assert bool(want["resampled"].any()) and not bool(want["resampled"].all()), name  # exchanges happened
            for key, w in want.items():
                g = got[name][key]
                assert g.shape == w.shape, (rank, name, key)
                if w.dtype == torch.bool or key == "nfe":
                    assert torch.equal(g, w), (rank, name, key)
                else:
                    torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5,
                                               msg=lambda m: f"rank {rank} {name} {key}: {m}")


if __name__ == "__main__":  # one torchrun rank
    _ranks_main(sys.argv[1])
