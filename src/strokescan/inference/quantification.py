"""Lesion sizes from class-id masks: areas per slice, volumes per scan, the largest lesion and ABC/2.

Units: with a pixel spacing, areas are mm²; with each slice's depth too, volumes are mL. Without them, areas are
``px`` and volumes ``voxels`` (pixel counts summed over slices) and every result says so in its ``unit``
field; nothing is ever converted with a guessed spacing. A single 2-D slice has no volume: its totals are areas
(``mm2``, or ``px``), never mL, whatever thickness its header states.

Volume = sum over slices of (lesion area on that slice x that slice's depth), so a series of mixed thickness
(4 mm slices below, 7 mm above) counts each slice for what it covers. A slice's depth
(:func:`slice_depths_mm`) is its own thickness where it meets a neighbour edge to edge; where both neighbours
are nearer than its thickness (an overlapping reconstruction, 5 mm every 2.5 mm) or both farther (gaps, or a
subsampled series: 0.625 mm slices every 3.1 mm) it is the distance it stands for (half the steps to its two
neighbours), so that tissue is neither counted twice nor left out.

ABC/2 (Kothari et al. 1996) for the hemorrhage's largest lesion (3-D connected component): on the slice
where it is largest, A = its longest diameter, B = its largest diameter perpendicular to A, C = the sum of
the depths of the slices it appears on; volume = A·B·C/2 (cm³ = mL). It approximates an ellipsoid's volume
(π/6·ABC) with π ≈ 3, so it reads about 5 % low on a true ellipsoid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

from strokescan.core.labels import ALL_CLASSES, LESION_CLASSES, LesionClass

_STRUCT_3D = ndi.generate_binary_structure(3, 2)  # 18-connectivity across slices
#: a step between slice centres this much above (or below) a slice's thickness is a gap (or an overlap)
_EDGE_TO_EDGE = 0.1


def slice_depths_mm(n_slices: int, positions_mm: Sequence[float] | None = None,
                    thicknesses_mm: Sequence[float | None] | None = None,
                    spacing_mm: float | None = None) -> list[float] | None:
    """The depth each slice of a volume stands for, in mm (see the module's docstring); None for a single slice
    (no volume) or when neither positions, thicknesses nor a spacing are known.

    ``positions_mm``: each slice's position along the slice normal (in slice order); ``thicknesses_mm``: each
    slice's own SliceThickness (None where absent); ``spacing_mm``: a uniform spacing, used only when neither of
    the others gives a slice its depth."""
    if n_slices < 2:
        return None
    steps = (np.abs(np.diff(np.asarray(positions_mm, float))) if positions_mm is not None
             and len(positions_mm) == n_slices else None)
    if thicknesses_mm is not None and len(thicknesses_mm) != n_slices:
        thicknesses_mm = None
    depths: list[float] = []
    for i in range(n_slices):
        t = thicknesses_mm[i] if thicknesses_mm is not None else None
        t = float(t) if t is not None and float(t) > 0 else None
        if steps is None:
            depth = t if t is not None else spacing_mm
        else:
            adjacent = [float(steps[k]) for k in (i - 1, i) if 0 <= k < len(steps)]
            extent = float(np.mean(adjacent))
            if t is None:
                depth = extent
            elif (all(a > (1 + _EDGE_TO_EDGE) * t for a in adjacent)
                  or all(a < (1 - _EDGE_TO_EDGE) * t for a in adjacent)):
                depth = extent  # gaps, or an overlapping reconstruction
            else:
                depth = t
        if depth is None or not depth > 0:
            return None
        depths.append(float(depth))
    return depths


def pixel_area_mm2(pixel_spacing_mm) -> float | None:
    if not pixel_spacing_mm:
        return None
    return float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1])


@dataclass
class LesionArea:
    """One lesion class on one slice."""

    pixels: int
    area: float
    unit: str  # "mm2" when the pixel spacing is known, else "px"

    def to_dict(self) -> dict:
        return {"pixels": self.pixels, "area": round(self.area, 2), "unit": self.unit}


def slice_areas(mask: np.ndarray, pixel_spacing_mm=None) -> dict[str, LesionArea]:
    """Area of each lesion class on one slice, by class name (mm² when the spacing is known, else px)."""
    px_area = pixel_area_mm2(pixel_spacing_mm)
    out = {}
    for c in LESION_CLASSES:
        n = int((mask == c).sum())
        out[c.label] = LesionArea(pixels=n, area=n * px_area if px_area else float(n), unit="mm2" if px_area else "px")
    return out


def feret_diameters(points_rc: np.ndarray, spacing_rc=(1.0, 1.0)) -> tuple[float, float]:
    """(A, B): longest diameter of a 2-D point set and its largest extent perpendicular to A (physical units).

    Points are pixel centres (row, col); each is widened by one pixel (the pixel's extent) so that a one-pixel
    lesion measures one pixel.
    """
    pts = np.asarray(points_rc, float) * np.asarray(spacing_rc, float)
    if len(pts) == 0:
        return 0.0, 0.0
    try:
        hull = pts[ConvexHull(pts).vertices] if len(pts) >= 3 else pts
    except QhullError:  # collinear
        hull = pts
    d = hull[:, None, :] - hull[None, :, :]
    dist = np.sqrt((d ** 2).sum(-1))
    i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
    a = float(dist[i, j])
    if a == 0:
        return float(spacing_rc[1]), float(spacing_rc[0])
    u = (hull[j] - hull[i]) / a
    perp = np.array([-u[1], u[0]])
    proj = hull @ perp
    b = float(proj.max() - proj.min())
    # widen by one pixel along each direction (pixel extent)
    a += float(np.abs(u * spacing_rc).sum())
    b += float(np.abs(perp * spacing_rc).sum())
    return a, b


@dataclass
class LesionSummary:
    """The largest 3-D connected lesion of one class."""

    label: str
    size: float  # mL, or voxels when spacing is unknown (a single slice: its area, mm2 or px)
    unit: str  # "mL" | "voxels" | "mm2" | "px"
    first_slice: int
    last_slice: int
    n_slices: int
    largest_slice: int
    largest_slice_area: float
    area_unit: str  # "mm2" | "px"
    abc2_ml: float | None = None  # hemorrhage only, when spacing is known
    abc: dict | None = None  # {"A_mm", "B_mm", "C_mm"}


@dataclass
class ClassQuantity:
    label: str
    per_slice_area: list[float]
    area_unit: str
    total: float  # mL, or voxels; for a single 2-D slice its area: mm2, or px
    unit: str  # "mL" | "voxels" | "mm2" | "px"
    n_lesions: int
    largest: LesionSummary | None = None


@dataclass
class SeriesQuantification:
    spacing_known: bool  # totals are physical: mL for a volume, mm2 for a single slice
    pixel_spacing_mm: list[float] | None
    slice_spacing_mm: float | None
    classes: dict[str, ClassQuantity] = field(default_factory=dict)
    slice_depths_mm: list[float] | None = None  # the depth each slice counted for (None: no volume in mL)
    is_volume: bool = True  # False for a single 2-D slice: totals are areas, never volumes

    @property
    def has_volume_ml(self) -> bool:
        """Whether the totals are volumes in mL (a segmented volume with known spacing)."""
        return self.is_volume and self.spacing_known

    def to_dict(self) -> dict:
        return asdict(self)


def quantify_series(masks, pixel_spacing_mm=None, slice_spacing_mm: float | None = None,
                    slice_depths_mm: Sequence[float] | None = None) -> SeriesQuantification:
    """Areas, volumes and the largest lesion per class for a series of class-id masks (one per slice).

    ``slice_depths_mm`` (one per slice, :func:`slice_depths_mm`) gives each slice its own depth; without it a
    uniform ``slice_spacing_mm`` (distance between slice centres) is used. Volumes need the pixel spacing and a
    depth; otherwise sizes are in voxels and labelled so. A single mask (a 2-D slice) has areas only.
    """
    vol = np.stack([np.asarray(m) for m in masks]) if len(masks) else np.zeros((0, 1, 1), np.uint8)
    n = len(vol)
    is_volume = n > 1
    px_area = pixel_area_mm2(pixel_spacing_mm)
    if slice_depths_mm is not None and len(slice_depths_mm) != n:
        raise ValueError(f"{len(slice_depths_mm)} slice depths for {n} masks")
    depths = None
    if is_volume:
        if slice_depths_mm is not None:
            depths = np.asarray(slice_depths_mm, float)
        elif slice_spacing_mm:
            depths = np.full(n, float(slice_spacing_mm))
    # mL of one voxel on each slice (None: no volume in mL)
    voxel_ml = px_area * depths / 1000.0 if px_area and depths is not None else None
    area_unit = "mm2" if px_area else "px"
    if is_volume:
        unit = "mL" if voxel_ml is not None else "voxels"
    else:
        unit = area_unit
    out = SeriesQuantification(spacing_known=voxel_ml is not None if is_volume else px_area is not None,
                               pixel_spacing_mm=list(pixel_spacing_mm) if pixel_spacing_mm else None,
                               slice_spacing_mm=slice_spacing_mm if is_volume else None,
                               slice_depths_mm=[round(float(d), 4) for d in depths] if voxel_ml is not None else None,
                               is_volume=is_volume)
    spacing_rc = tuple(float(s) for s in pixel_spacing_mm) if pixel_spacing_mm else (1.0, 1.0)

    def size(per_slice_counts: np.ndarray) -> float:
        if voxel_ml is not None:
            return float((per_slice_counts * voxel_ml).sum())
        if not is_volume and px_area:
            return float(per_slice_counts.sum() * px_area)
        return float(per_slice_counts.sum())

    # voxels of each class per slice, in one pass over each slice
    per_class = (np.stack([np.bincount(s.ravel(), minlength=len(ALL_CLASSES))[:len(ALL_CLASSES)] for s in vol])
                 if len(vol) else np.zeros((0, len(ALL_CLASSES)), np.int64))
    for c in LESION_CLASSES:
        name = c.label
        counts = per_class[:, c]
        m = vol == c if counts.any() else None
        per_slice = [float(k * px_area) if px_area else float(k) for k in counts]
        labels, n_lesions = ndi.label(m, structure=_STRUCT_3D) if m is not None else (None, 0)
        q = ClassQuantity(label=name, per_slice_area=per_slice, area_unit=area_unit, total=size(counts),
                          unit=unit, n_lesions=int(n_lesions))
        if n_lesions:
            sizes = np.bincount(labels.ravel(), minlength=n_lesions + 1)[1:]  # voxels per lesion (as ndi.sum)
            k = int(np.argmax(sizes)) + 1
            comp = labels == k
            per = comp.reshape(len(comp), -1).sum(axis=1)
            present = np.nonzero(per)[0]
            big = int(np.argmax(per))
            summ = LesionSummary(
                label=name, size=size(per), unit=unit,
                first_slice=int(present[0]), last_slice=int(present[-1]), n_slices=int(len(present)),
                largest_slice=big, largest_slice_area=float(per[big] * px_area) if px_area else float(per[big]),
                area_unit=area_unit,
            )
            if c == LesionClass.HEMORRHAGE and voxel_ml is not None:
                a_mm, b_mm = feret_diameters(np.argwhere(comp[big]), spacing_rc)
                c_mm = float(depths[present].sum())
                summ.abc = {"A_mm": round(a_mm, 2), "B_mm": round(b_mm, 2), "C_mm": round(c_mm, 2)}
                summ.abc2_ml = abc2_ml(a_mm, b_mm, c_mm)
            q.largest = summ
        out.classes[name] = q
    return out


def abc2_ml(a_mm: float, b_mm: float, c_mm: float) -> float:
    """The ABC/2 formula with diameters in mm, result in mL."""
    return a_mm * b_mm * c_mm / 2.0 / 1000.0


def describe(q: SeriesQuantification) -> list[str]:
    """Human-readable lines, units stated."""
    lines = []
    for name, c in q.classes.items():
        if not c.n_lesions:
            continue
        line = f"{name}: total {c.total:.2f} {c.unit} in {c.n_lesions} lesion(s)"
        if c.largest:
            lg = c.largest
            line += (f"; largest {lg.size:.2f} {lg.unit} on slices {lg.first_slice}-{lg.last_slice}"
                     f" (max {lg.largest_slice_area:.0f} {lg.area_unit} on slice {lg.largest_slice})")
            if lg.abc2_ml is not None:
                line += f"; ABC/2 {lg.abc2_ml:.2f} mL"
        lines.append(line)
    if not q.is_volume:
        lines.append("a single 2-D slice: sizes are areas, not volumes")
    if not q.spacing_known:
        lines.append("spacing unknown: sizes are pixel/voxel counts, not mm² or mL")
    return lines
