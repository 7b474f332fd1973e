"""The shared vocabulary every layer speaks: lesion classes, display windows, slice geometry, calibration.

A leaf package: it imports nothing else from strokescan but :mod:`strokescan.errors`.
"""
