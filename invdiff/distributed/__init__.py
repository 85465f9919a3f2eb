"""Work spread over processes and machines.

- :mod:`invdiff.distributed.ray_tasks`: the engine, one Ray task per item (a local Ray cluster
  by default, or an existing one by its address), at most ``workers`` in flight, results as they
  finish, retries of tasks whose worker died.
- :mod:`invdiff.distributed.batch`: many scans on Ray, the work behind ``invdiff batch``
  (one :func:`invdiff.recon.file.reconstruct_file` task per scan).
- :mod:`invdiff.distributed.context`: one volume over torch.distributed ranks (``torchrun``): contiguous
  blocks of slices, halo exchange for TV along z, all-reduced CG inner products, rank 0 writes.
- :mod:`invdiff.distributed.particles`: SMC/AFDPS particles over ranks, per-particle random streams.

Ray is an optional dependency (``pip install "invdiff[ray]"``); it is imported when used.
"""

from invdiff.distributed.batch import BatchResult, list_scans, output_path, run_batch
from invdiff.distributed.context import SliceGroup, process_group, reconstruct_split
from invdiff.distributed.particles import ParticleSplit, ParticleStreams
from invdiff.distributed.ray_tasks import TaskFailure, ray_session, run_tasks

__all__ = ["BatchResult", "ParticleSplit", "ParticleStreams", "SliceGroup", "TaskFailure", "list_scans",
           "output_path", "process_group", "ray_session", "reconstruct_split", "run_batch", "run_tasks"]
