"""ASTRA's 2D geometry dictionaries <-> :class:`Geometry2D`, in physical units, and per-view frames.

ASTRA describes a 2D scan with two dictionaries (``astra.create_vol_geom``,
``astra.create_proj_geom``):

* volume: ``GridRowCount`` ``H``, ``GridColCount`` ``W`` and ``option`` ``WindowMinX/MaxX/MinY/MaxY``,
  the slice's extent (default ``-W/2 .. W/2``, ``-H/2 .. H/2``). The pixel size is
  ``(MaxX - MinX) / W``; row 0 is at ``MaxY`` (``y`` points up).
* projection: ``parallel`` (``DetectorWidth`` ``d``, ``DetectorCount`` ``n``, ``ProjectionAngles``),
  ``fanflat`` (the same plus ``DistanceOriginSource`` ``D_s`` and ``DistanceOriginDetector`` ``D_d``),
  or the ``parallel_vec`` / ``fanflat_vec`` forms: ``Vectors``, one row per view,
  ``(ray_x, ray_y, d_x, d_y, u_x, u_y)`` (ray direction, detector centre, vector from one cell to
  the next) or ``(src_x, src_y, d_x, d_y, u_x, u_y)`` (source position instead of the ray).

All lengths are in the units of the window (for instance mm); ASTRA's projectors then compute line
integrals in those units, so a slice of attenuation in 1/mm gives a dimensionless sinogram.

Per-view frames (what filtered back-projection needs). For view ``k``, ``e_k`` is the unit detector
axis and the detector coordinate of cell ``j`` is ``o_k + (j - (n - 1)/2) d_k``:

* parallel: ``e_k`` is the unit normal of the ray ``r_k`` with ``e_k . u_k > 0``; ``d_k = e_k . u_k``
  (the distance between neighbouring rays) and ``o_k = e_k . c_k`` (``c_k`` the detector centre); a
  point ``p`` lies on the ray of detector coordinate ``p . e_k``.
* fan beam, flat detector: ``D_s = |s_k|``, ``n_k = -s_k / D_s`` (source towards the rotation axis),
  ``e_k = u_k / |u_k|``, ``d_k = |u_k|``, ``D_d = c_k . n_k``, ``o_k = c_k . e_k``; a point ``p`` falls on
  detector coordinate ``(D_s + D_d) (p . e_k) / (D_s + p . n_k)``. The detector must be perpendicular
  to ``n_k`` (no tilt) for the FBP formula to hold.

For the standard forms, ``e_k = (cos theta_k, sin theta_k)``, ``n_k = (-sin theta_k, cos theta_k)``,
``o_k = 0`` (ASTRA's own conversion, ``astra.geom_2vec``, gives the same vectors).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from invdiff.operators.functional.astra_ct import Geometry2D

PROJ_TYPES = ("parallel", "fanflat", "parallel_vec", "fanflat_vec")


def _number(where: str, v: Any, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: expected a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{where}: expected a {'positive ' if positive else ''}finite number, got {v!r}")
    return v


def _count(where: str, v: Any) -> int:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{where}: expected a positive integer, got {v!r}")
    return int(v)


def _get(d: Mapping, key: str, where: str) -> Any:
    if key not in d:
        raise ValueError(f"{where}: missing key {key!r} (keys: {sorted(d)})")
    return d[key]


def parse_vol_geom(vol_geom: Mapping) -> tuple[int, int, tuple[float, float, float, float]]:
    """``(H, W, (min_x, max_x, min_y, max_y))`` from ASTRA's 2D volume geometry dictionary."""
    if not isinstance(vol_geom, Mapping):
        raise TypeError(f"vol_geom: expected ASTRA's volume geometry dict, got {type(vol_geom).__name__}")
    H = _count("vol_geom['GridRowCount']", _get(vol_geom, "GridRowCount", "vol_geom"))
    W = _count("vol_geom['GridColCount']", _get(vol_geom, "GridColCount", "vol_geom"))
    if "GridSliceCount" in vol_geom:
        raise ValueError("vol_geom: a 3D volume geometry (GridSliceCount); expected a 2D one (slices are stacked "
                         "along the batch: give the sinogram as (slices, n_views, n_det))")
    opt = vol_geom.get("option", {}) or {}
    default = {"WindowMinX": -W / 2, "WindowMaxX": W / 2, "WindowMinY": -H / 2, "WindowMaxY": H / 2}
    win = tuple(_number(f"vol_geom['option']['{k}']", opt.get(k, v)) for k, v in default.items())
    x0, x1, y0, y1 = win
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"vol_geom['option']: expected WindowMinX < WindowMaxX and WindowMinY < WindowMaxY, got {win}")
    px, py = (x1 - x0) / W, (y1 - y0) / H
    if abs(px - py) > 1e-6 * max(px, py):
        raise ValueError(f"vol_geom: expected square pixels, got {px:.6g} (x) by {py:.6g} (y) from the window {win} "
                         f"and a {H}x{W} grid (ASTRA's 2D CPU projectors assume square pixels)")
    return H, W, win


def _vectors(proj_geom: Mapping) -> np.ndarray:
    v = np.asarray(_get(proj_geom, "Vectors", "proj_geom"), dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 6 or v.shape[0] == 0 or not np.isfinite(v).all():
        raise ValueError(f"proj_geom['Vectors']: expected a finite (n_views, 6) array, got shape {v.shape}")
    return v


def geometry_from_astra(proj_geom: Mapping, vol_geom: Mapping) -> Geometry2D:
    """A :class:`Geometry2D` (window and, for _vec forms, vectors set) from ASTRA's two dictionaries."""
    H, W, win = parse_vol_geom(vol_geom)
    if not isinstance(proj_geom, Mapping):
        raise TypeError(f"proj_geom: expected ASTRA's projection geometry dict, got {type(proj_geom).__name__}")
    kind = _get(proj_geom, "type", "proj_geom")
    if kind not in PROJ_TYPES:
        raise ValueError(f"proj_geom['type']: expected one of {PROJ_TYPES}, got {kind!r}")
    n = _count("proj_geom['DetectorCount']", _get(proj_geom, "DetectorCount", "proj_geom"))
    if kind in ("parallel", "fanflat"):
        d = _number("proj_geom['DetectorWidth']", _get(proj_geom, "DetectorWidth", "proj_geom"), positive=True)
        a = np.asarray(_get(proj_geom, "ProjectionAngles", "proj_geom"), dtype=np.float64).reshape(-1)
        if a.size == 0 or not np.isfinite(a).all():
            raise ValueError(f"proj_geom['ProjectionAngles']: expected a non-empty list of finite angles in radians, "
                             f"got {a.size} value(s)")
        Ds = Dd = None
        if kind == "fanflat":
            Ds = _number("proj_geom['DistanceOriginSource']", _get(proj_geom, "DistanceOriginSource", "proj_geom"), True)
            Dd = _number("proj_geom['DistanceOriginDetector']", _get(proj_geom, "DistanceOriginDetector", "proj_geom"))
            R = math.hypot(*(max(abs(c) for c in win[i:i + 2]) for i in (0, 2)))
            if Ds <= R:
                raise ValueError(f"proj_geom['DistanceOriginSource']: expected more than {R:.4g} (the farthest corner "
                                 f"of the volume window: the source must lie outside the object), got {Ds}")
        return Geometry2D(H, W, tuple(a.tolist()), n, d, Ds, Dd, window=win)
    v = _vectors(proj_geom)
    if np.any(np.hypot(v[:, 4], v[:, 5]) == 0) or (kind == "parallel_vec" and np.any(np.hypot(v[:, 0], v[:, 1]) == 0)):
        raise ValueError(f"proj_geom['Vectors']: zero-length {'ray or ' if kind == 'parallel_vec' else ''}detector "
                         f"cell vector in some view")
    vectors = tuple(map(tuple, v.tolist()))
    if kind == "parallel_vec":
        f = view_frames(Geometry2D(H, W, (0.0,) * len(v), n, window=win, vectors=vectors))
        return Geometry2D(H, W, tuple(np.arctan2(f.ey, f.ex).tolist()), n, float(f.spacing.mean()), window=win,
                          vectors=vectors)
    Ds = np.hypot(v[:, 0], v[:, 1])
    if np.any(Ds == 0):
        raise ValueError("proj_geom['Vectors']: a source at the rotation axis (0, 0) in some view")
    nvec = -v[:, 0:2] / Ds[:, None]  # summaries only: the vectors define the scan (a tilted detector is fine for A)
    theta = np.arctan2(-nvec[:, 0], nvec[:, 1])
    return Geometry2D(H, W, tuple(theta.tolist()), n, float(np.hypot(v[:, 4], v[:, 5]).mean()), float(Ds.mean()),
                      float((v[:, 2:4] * nvec).sum(1).mean()), window=win, vectors=vectors)


@dataclass(frozen=True)
class ViewFrames:
    """Per-view frames (float64 arrays of length ``n_views``); see the module docstring."""

    ex: np.ndarray
    ey: np.ndarray
    spacing: np.ndarray
    offset: np.ndarray
    view_angle: np.ndarray  # angle of the view for the angular weights (theta_k)
    nx: np.ndarray | None = None
    ny: np.ndarray | None = None
    source_distance: np.ndarray | None = None
    detector_distance: np.ndarray | None = None


def view_frames(g: Geometry2D) -> ViewFrames:
    """Detector axis, cell width, offset (and fan-beam distances) of every view of ``g``."""
    K = g.n_views
    if g.vectors is None:
        th = np.asarray(g.angles, dtype=np.float64)
        ex, ey = np.cos(th), np.sin(th)
        common = dict(ex=ex, ey=ey, spacing=np.full(K, g.detector_spacing), offset=np.zeros(K), view_angle=th)
        if not g.is_fan:
            return ViewFrames(**common)
        return ViewFrames(**common, nx=-ey, ny=ex, source_distance=np.full(K, g.source_distance),
                          detector_distance=np.full(K, g.detector_distance))
    v = np.asarray(g.vectors, dtype=np.float64)
    c, u = v[:, 2:4], v[:, 4:6]
    if not g.is_fan:
        r = v[:, 0:2] / np.hypot(v[:, 0], v[:, 1])[:, None]
        e = np.stack([r[:, 1], -r[:, 0]], axis=1)
        e *= np.where((e * u).sum(1) < 0, -1.0, 1.0)[:, None]
        spacing = (e * u).sum(1)
        if np.any(spacing <= 1e-9 * np.hypot(u[:, 0], u[:, 1])):
            raise ValueError("proj_geom['Vectors']: a detector parallel to its rays in some view")
        return ViewFrames(e[:, 0], e[:, 1], spacing, (e * c).sum(1), np.arctan2(e[:, 1], e[:, 0]))
    s = v[:, 0:2]
    Ds = np.hypot(s[:, 0], s[:, 1])
    if np.any(Ds == 0):
        raise ValueError("proj_geom['Vectors']: a source at the rotation axis (0, 0) in some view")
    nvec = -s / Ds[:, None]
    spacing = np.hypot(u[:, 0], u[:, 1])
    e = u / spacing[:, None]
    tilt = np.abs((e * nvec).sum(1))
    if np.any(tilt > 1e-6):
        raise ValueError(f"proj_geom['Vectors']: the detector is tilted by up to {math.degrees(math.asin(min(1, tilt.max()))):.3g} "
                         f"degrees against the central ray; filtered back-projection needs a detector perpendicular "
                         f"to the line from the source through the axis (use an iterative solver, e.g. --solver cg)")
    Dd = (c * nvec).sum(1)
    return ViewFrames(e[:, 0], e[:, 1], spacing, (c * e).sum(1), np.arctan2(-nvec[:, 0], nvec[:, 1]),
                      nvec[:, 0], nvec[:, 1], Ds, Dd)


def astra_dicts(g: Geometry2D) -> tuple[dict, dict]:
    """``(proj_geom, vol_geom)`` of ``g`` as plain JSON-ready dicts (lists, floats)."""
    x0, x1, y0, y1 = g.extent
    vol = {"GridRowCount": g.height, "GridColCount": g.width,
           "option": {"WindowMinX": x0, "WindowMaxX": x1, "WindowMinY": y0, "WindowMaxY": y1}}
    if g.vectors is not None:
        proj = {"type": "fanflat_vec" if g.is_fan else "parallel_vec", "DetectorCount": g.n_detectors,
                "Vectors": [list(r) for r in g.vectors]}
    else:
        proj = {"type": "fanflat" if g.is_fan else "parallel", "DetectorWidth": g.detector_spacing,
                "DetectorCount": g.n_detectors, "ProjectionAngles": list(g.angles)}
        if g.is_fan:
            proj.update(DistanceOriginSource=g.source_distance, DistanceOriginDetector=g.detector_distance)
    return proj, vol


def to_json(d: Mapping) -> str:
    """JSON text of an ASTRA dict (numpy arrays and scalars become lists and numbers)."""
    def plain(o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"cannot write {type(o).__name__} to JSON")
    return json.dumps(dict(d), default=plain)


def from_json(text: str | bytes, what: str) -> dict:
    """An ASTRA dict from its JSON text; ``what`` names it in errors."""
    if isinstance(text, bytes):
        text = text.decode()
    try:
        d = json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what}: expected the JSON text of ASTRA's geometry dict, could not parse it ({exc})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{what}: expected a JSON object (ASTRA's geometry dict), got {type(d).__name__}")
    return d
