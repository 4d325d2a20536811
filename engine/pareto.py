"""Non-dominated sets and hypervolume in pure numpy.

Every function takes ``maximize``: one flag per objective. Internally all objectives are turned
into minimisation by flipping the sign of the maximised ones, so one dominance rule serves all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def _as_minimized(points: npt.ArrayLike, maximize: Sequence[bool]) -> FloatArray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2:
        raise ValueError(f"points must be a 2-D array (n_points, n_objectives), got shape {pts.shape}")
    if pts.shape[1] != len(maximize):
        raise ValueError(f"{pts.shape[1]} objectives but {len(maximize)} maximize flags")
    signs = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)
    return pts * signs


def non_dominated(points: npt.ArrayLike, maximize: Sequence[bool]) -> BoolArray:
    """Mask of the points no other point dominates; rows with NaN are never on the front.

    A dominates B when A is at least as good in every objective and strictly better in one,
    so exact duplicates do not knock each other out.
    """
    pts = _as_minimized(points, maximize)
    valid = ~np.isnan(pts).any(axis=1)
    mask = np.zeros(len(pts), dtype=bool)
    sub = pts[valid]
    if len(sub) == 0:
        return mask
    # (n, n, d) comparisons: fine for the thousands of results a dashboard holds.
    le = (sub[:, None, :] <= sub[None, :, :]).all(axis=2)  # le[j, i]: j at least as good as i
    lt = (sub[:, None, :] < sub[None, :, :]).any(axis=2)
    dominated = (le & lt).any(axis=0)
    mask[np.flatnonzero(valid)] = ~dominated
    return mask


def _hv2d_min(pts: FloatArray, ref: FloatArray) -> float:
    """Area dominated by minimisation points inside the box bounded by ref."""
    pts = pts[(pts < ref).all(axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]  # by x, then y
    area, best_y = 0.0, ref[1]
    # Sweep along x: each point that improves the best y so far adds the horizontal strip
    # between its y and that best y, reaching from its x to ref's x.
    for x, y in pts:
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return float(area)


def hypervolume(points: npt.ArrayLike, ref: Sequence[float], maximize: Sequence[bool]) -> float:
    """Volume dominated by the points and bounded by the reference point (2 or 3 objectives).

    Points that are not strictly better than ``ref`` in every objective add nothing.
    """
    pts = _as_minimized(points, maximize)
    ref_min = _as_minimized(np.asarray([ref], dtype=np.float64), maximize)[0]
    pts = pts[~np.isnan(pts).any(axis=1)]
    if pts.shape[1] == 2:
        return _hv2d_min(pts, ref_min)
    if pts.shape[1] != 3:
        raise ValueError(f"hypervolume supports 2 or 3 objectives, got {pts.shape[1]}")
    pts = pts[(pts < ref_min).all(axis=1)]
    if len(pts) == 0:
        return 0.0
    # Slice along the third objective: between consecutive z levels the dominated region's
    # cross-section is the 2-D hypervolume of the points at or below that level.
    order = np.argsort(pts[:, 2], kind="stable")
    pts = pts[order]
    levels = np.append(np.unique(pts[:, 2]), ref_min[2])
    volume = 0.0
    for lo, hi in zip(levels[:-1], levels[1:], strict=True):
        active = pts[pts[:, 2] <= lo]
        volume += _hv2d_min(active[:, :2], ref_min[:2]) * (hi - lo)
    return float(volume)
