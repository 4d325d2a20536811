"""Pareto helpers against brute-force oracles: pairwise dominance and unit-cell counting."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.pareto import hypervolume, non_dominated


def _brute_front(pts: np.ndarray, maximize: list[bool]) -> np.ndarray:
    signs = np.where(maximize, -1.0, 1.0)
    p = pts * signs
    out = []
    for i in range(len(p)):
        dominated = any(np.all(p[j] <= p[i]) and np.any(p[j] < p[i]) for j in range(len(p)) if j != i)
        out.append(not dominated)
    return np.array(out)


def _grid_volume(pts: np.ndarray, ref: list[int], maximize: list[bool]) -> int:
    """Count unit cells dominated by some point (integer coordinates, minimisation after sign flip)."""
    signs = np.where(maximize, -1, 1)
    p = (pts * signs).astype(int)
    r = np.asarray(ref) * signs
    lo = p.min(axis=0)
    count = 0
    for cell in itertools.product(*(range(lo[k], r[k]) for k in range(p.shape[1]))):
        # the cell [c, c+1) is dominated when some point is <= c in every objective
        if any(np.all(q <= np.asarray(cell)) for q in p):
            count += 1
    return count


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("maximize", [[False, False], [True, False], [False, True, True]])
def test_non_dominated_matches_brute_force(seed: int, maximize: list[bool]) -> None:
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 6, size=(25, len(maximize))).astype(float)  # ties on purpose
    assert np.array_equal(non_dominated(pts, maximize), _brute_front(pts, maximize))


def test_duplicates_stay_and_nan_rows_leave_the_front() -> None:
    pts = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0], [np.nan, 0.0]])
    assert non_dominated(pts, [False, False]).tolist() == [True, True, False, False]


def test_accuracy_up_size_down() -> None:
    # (size, accuracy): smaller and more accurate wins.
    pts = np.array([[100, 0.99], [50, 0.98], [60, 0.97], [25, 0.90]])
    assert non_dominated(pts, [False, True]).tolist() == [True, True, False, True]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "maximize", [[False, False], [True, False], [False, False, False], [True, False, True]]
)
def test_hypervolume_matches_grid_count(seed: int, maximize: list[bool]) -> None:
    rng = np.random.default_rng(seed)
    d = len(maximize)
    pts = rng.integers(1, 7, size=(8, d))
    ref = [0 if m else 8 for m in maximize]
    assert hypervolume(pts, ref, maximize) == pytest.approx(_grid_volume(pts, ref, maximize))


def test_hypervolume_ignores_points_outside_the_reference() -> None:
    assert hypervolume([[5.0, 5.0]], [4.0, 4.0], [False, False]) == 0.0
    assert hypervolume([[1.0, 1.0], [9.0, 0.0]], [2.0, 2.0], [False, False]) == pytest.approx(1.0)


def test_shape_errors_are_plain() -> None:
    with pytest.raises(ValueError, match="maximize flags"):
        non_dominated([[1.0, 2.0]], [False])
    with pytest.raises(ValueError, match="2 or 3"):
        hypervolume([[1.0, 2.0, 3.0, 4.0]], [5.0] * 4, [False] * 4)


# --- property-based: the same oracles on inputs hypothesis chooses (and shrinks on failure) ---

_objective_flags = st.lists(st.booleans(), min_size=2, max_size=3)


@st.composite
def _points_and_flags(draw: st.DrawFn) -> tuple[np.ndarray, list[bool]]:
    maximize = draw(_objective_flags)
    n = draw(st.integers(min_value=1, max_value=12))
    coords = st.integers(min_value=1, max_value=6)
    pts = draw(
        st.lists(st.lists(coords, min_size=len(maximize), max_size=len(maximize)), min_size=n, max_size=n)
    )
    return np.asarray(pts, dtype=float), maximize


@settings(max_examples=150, deadline=None)
@given(_points_and_flags())
def test_front_is_the_brute_force_front(case: tuple[np.ndarray, list[bool]]) -> None:
    pts, maximize = case
    assert np.array_equal(non_dominated(pts, maximize), _brute_front(pts, maximize))


@settings(max_examples=100, deadline=None)
@given(_points_and_flags())
def test_hypervolume_is_the_unit_cell_count(case: tuple[np.ndarray, list[bool]]) -> None:
    pts, maximize = case
    ref = [0 if m else 7 for m in maximize]
    assert hypervolume(pts, ref, maximize) == pytest.approx(_grid_volume(pts, ref, maximize))


@settings(max_examples=100, deadline=None)
@given(_points_and_flags())
def test_hypervolume_of_the_front_is_that_of_all_points(case: tuple[np.ndarray, list[bool]]) -> None:
    # Dominated points add no volume: the front alone must give the same figure.
    pts, maximize = case
    ref = [0 if m else 7 for m in maximize]
    front = pts[non_dominated(pts, maximize)]
    assert hypervolume(front, ref, maximize) == pytest.approx(hypervolume(pts, ref, maximize))
