"""Checking an op against an oracle: shapes, dtypes and values, failing with both sides.

Used by gpunn's tests and available to anyone who adds a kernel or layer::

    assert_matches("conv2d forward", out, reference_out)
"""

from __future__ import annotations

import numpy as np

__all__ = ["assert_matches", "default_tolerance"]

_TOLERANCES = {
    np.dtype(np.float16): (1e-2, 1e-3),
    np.dtype(np.float32): (1e-4, 1e-5),
    np.dtype(np.float64): (1e-9, 1e-12),
}


def default_tolerance(dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing arrays of ``dtype``."""
    return _TOLERANCES.get(np.dtype(dtype), (0.0, 0.0))


def _host(a) -> np.ndarray:
    get = getattr(a, "get", None)
    return get() if get is not None else np.asarray(a)


def assert_matches(what: str, got, reference, rtol=None, atol=None, check_dtype=True) -> None:
    """Raise AssertionError unless ``got`` equals ``reference`` in shape, dtype and value.

    Tolerances default to those of ``reference``'s dtype. The message gives both sides:
    ``conv2d dx: shape mismatch: gpunn=(10, 3) | reference=(10, 4)``.
    """
    g, r = _host(got), _host(reference)
    if g.shape != r.shape:
        raise AssertionError(f"{what}: shape mismatch: gpunn={g.shape} | reference={r.shape}")
    if check_dtype and g.dtype != r.dtype:
        raise AssertionError(f"{what}: dtype mismatch: gpunn={g.dtype} | reference={r.dtype}")
    d_rtol, d_atol = default_tolerance(r.dtype)
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    if g.size == 0:
        return
    bad = ~np.isclose(g, r, rtol=rtol, atol=atol, equal_nan=True)
    if bad.any():
        idx = np.unravel_index(np.argmax(np.where(bad, np.abs(g - r), -1)), g.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {g.size} values differ beyond rtol={rtol}, "
            f"atol={atol}; worst at {tuple(int(i) for i in idx)}: gpunn={g[idx]!r} | "
            f"reference={r[idx]!r} (max abs diff {np.max(np.abs(g - r)):.3g})"
        )
