"""Rotation correction: estimate the in-plane angle of a head slice and bring it upright.

PLACEHOLDER being replaced by the rotation work (see docs/rotation.md when it lands).
"""

from __future__ import annotations

from strokescan.io.scan import Scan


def estimate_scan_rotation(scan: Scan) -> float | None:
    """Angle in degrees (counter-clockwise) by which the scan's slices are rotated from upright."""
    return None
