"""Noiseless galaxy shapes of known inclination for the axis-ratio and evaluation tests."""

from __future__ import annotations

import numpy as np


def oblate(inc, q0=0.2, n=96, rs=7.0, angle=0.4, centre=(0.3, -0.2)):
    """Noiseless projected oblate exponential spheroid of intrinsic axis ratio q0 (Hubble's model)."""
    q = np.sqrt(np.cos(np.radians(inc)) ** 2 + (q0 * np.sin(np.radians(inc))) ** 2)
    y, x = np.mgrid[0:n, 0:n] - (n - 1) / 2.0
    x, y = x - centre[0], y - centre[1]
    u, v = np.cos(angle) * x + np.sin(angle) * y, -np.sin(angle) * x + np.cos(angle) * y
    return np.exp(-np.hypot(u, v / q) / rs)
