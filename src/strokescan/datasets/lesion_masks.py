"""The multi-source lesion segmentation set: per slice an image, a class-id mask and what the source labels.

Classes: 0 background, 1 hemorrhage (clot), 2 perihematomal edema, 3 ischemic infarct
(:class:`strokescan.core.labels.LesionClass`).

No source labels every class. Each sample therefore carries, besides its class-id ``target``:

``unknown``
    a per-pixel bitmask (uint8, bit ``c`` = class ``c``) of classes the source does not label at that pixel.
    It is 0 where ``target`` > 0 (a marked pixel is that class). The partial-label loss
    (:mod:`strokescan.training.segmenter`) lets a pixel with target 0 be background *or* any class in its
    ``unknown`` bits, so a prediction of a class the source never labels is not punished.
``labelled``
    per class, whether the sample labels it everywhere (no pixel has its unknown bit). Dice terms and the
    per-class evaluation use only samples where the class is labelled.

What each source labels (decided here, documented in docs/segmentation.md):

=================  ==========================================================================================
source             labelled
=================  ==========================================================================================
bhsd-mini          hemorrhage (all five bleed types, colour-coded) ; infarct labelled absent (an assumption:
                   a hemorrhage cohort) ; edema unknown (a bleed may carry edema nobody outlined)
phe-sich           edema (mask 255) ; hemorrhage *derived* (:func:`phe_derived_clot`): the hyperdense pixels
                   inside the Pascal-VOC boxes (which enclose clot + edema) or the filled, dilated edema rim,
                   outside the edema, holes filled; absent elsewhere. Not a reader's outline ; infarct labelled
                   absent (an assumption: spontaneous-hemorrhage patients, see docs/segmentation.md)
ctich-masks        hemorrhage (CT-ICH's own hand-drawn masks, every matched slice, blood or not: empty masks are
                   real negatives) ; infarct labelled absent (trauma cohort) ; edema unknown (contusions carry
                   edema nobody outlined) ; patient ids are ctich-kaggle's, folds the committed classifier folds
aisd-mini          infarct (> 127) ; hemorrhage and edema unknown
cpaisd-mini        infarct = core (red) + penumbra (green), as the issue asks ; hemorrhage and edema unknown
realtime-mini      non-augmented rows only (the 12 ischemic originals): infarct = green ; red would be
                   hemorrhage but only occurs in augmented copies, which are excluded ; others unknown
ctich-kaggle       (not a default source since ctich-masks) label-0 slices only, a seeded sample per patient:
                   every class labelled absent (trauma cohort; edema is *perihematomal*, so none without a
                   clot; an acute infarct visible on these slices is assumed absent, an assumption)
=================  ==========================================================================================

``head-ct-dicom`` has no masks and is not used here.

A user who has the full public sets adds them with ``public={"bhsd": folder, ...}`` (loaders in
:mod:`strokescan.datasets.public`); each replaces the mini set cut from it (same volumes: kept together they
would leak across folds; ctich-nifti replaces ctich-masks):

=================  ==========================================================================================
full set           labelled ; rows
=================  ==========================================================================================
bhsd               as bhsd-mini (NIfTI masks 1-5 = hemorrhage) ; every lesion slice of each volume plus up to
                   ``negatives_per_patient`` of its lesion-free slices (middle 20-85 %) ; replaces bhsd-mini
ctich-nifti        hemorrhage (mask > 0), infarct absent (trauma cohort), edema unknown (contusions carry
                   edema nobody outlined) ; rows as bhsd ; patient ids are ctich-kaggle's (the same 82 people),
                   so both sets put a patient in the same fold
aisd               as aisd-mini ; lesion slices plus sampled lesion-free slices per patient ; replaces
                   aisd-mini and realtime-mini (whose originals are likely AISD)
teknofest          per row, by class folder: KANAMA hemorrhage (mask > 0), ISKEMI infarct (mask > 0),
                   INMEYOK every class absent ; each image its own group (the release has no patient ids)
=================  ==========================================================================================

Volume rows are expanded per slice: ``frame`` is the slice's index in the volume as the reader orients it
(:func:`strokescan.io.nifti.read_nifti`: inferior first), and image and mask are read through that same reader,
so they share one grid whatever the file's affine.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage as ndi

from strokescan.config import SEED
from strokescan.core.geometry import circular_median_deg
from strokescan.core.labels import BACKGROUND, EDEMA, HEMORRHAGE, INFARCT
from strokescan.datasets import local
from strokescan.datasets.manifest import finalize
from strokescan.datasets.public import PUBLIC_LOADERS
from strokescan.datasets.splits import CTICH_KAGGLE_FOLDS, make_patient_folds, read_folds
from strokescan.errors import DataError
from strokescan.io import Scan, load_scan
from strokescan.models.rotation import RotationEstimator
from strokescan.preprocessing.density import blood_range
from strokescan.preprocessing.masking import head_masks

ALL_BITS = (1 << HEMORRHAGE) | (1 << EDEMA) | (1 << INFARCT)

#: Classes each source labels everywhere (background is always labelled where a mask exists).
SOURCE_LABELLED: dict[str, tuple[int, ...]] = {
    "bhsd-mini": (HEMORRHAGE, INFARCT),
    "phe-sich": (HEMORRHAGE, EDEMA, INFARCT),  # hemorrhage *derived* (phe_derived_clot): see decode_sample
    "aisd-mini": (INFARCT,),
    "cpaisd-mini": (INFARCT,),
    "realtime-mini": (INFARCT,),
    "ctich-masks": (HEMORRHAGE, INFARCT),  # CT-ICH's own clot masks on the ctich-kaggle JPEGs
    "ctich-kaggle": (HEMORRHAGE, EDEMA, INFARCT),  # label-0 slices only (before ctich-masks existed)
}
#: the default training sources: ctich-masks replaces the ctich-kaggle negatives (same slices, real masks)
SEG_SOURCES: tuple[str, ...] = ("bhsd-mini", "phe-sich", "aisd-mini", "cpaisd-mini", "realtime-mini", "ctich-masks")

#: The full public sets (``public=`` of :func:`build_segmentation_manifest`): classes labelled (teknofest: per
#: row, see :func:`_teknofest_rows`) and the mini sets each replaces.
PUBLIC_LABELLED: dict[str, tuple[int, ...]] = {
    "bhsd": (HEMORRHAGE, INFARCT),
    "ctich-nifti": (HEMORRHAGE, INFARCT),
    "aisd": (INFARCT,),
    "teknofest": (),
}
PUBLIC_REPLACES: dict[str, tuple[str, ...]] = {"bhsd": ("bhsd-mini",), "aisd": ("aisd-mini", "realtime-mini"),
                                               "ctich-nifti": ("ctich-masks",)}
TEKNOFEST_LABELLED = {"hemorrhage": (HEMORRHAGE,), "ischemic": (INFARCT,), "none": (HEMORRHAGE, EDEMA, INFARCT)}

log = logging.getLogger(__name__)

PHE_CLOT_DILATION_PX = 5  # the clot lies inside the edema rim: the filled rim, dilated, may hold clot
PHE_CLOT_MIN_PX = 20  # smaller hyperdense specks in the region are not taken for the clot


@lru_cache(maxsize=4)
def _scan(path: str) -> Scan:
    """The :class:`~strokescan.io.scan.Scan` of ``path``; the last few are kept (a volume's slices come in a row;
    files are assumed not to change while a process runs)."""
    return load_scan(path)


def _frame(row) -> int:
    frame = row.get("frame")
    return 0 if frame is None or pd.isna(frame) else int(frame)


def row_slice(row, load=None) -> tuple[np.ndarray, bool]:
    """The 2-D pixels (input grid) of one manifest row, and whether they are Hounsfield units."""
    scan = load(row["image_path"]) if load is not None else _scan(str(row["image_path"]))
    return scan.pixels[_frame(row)], bool(scan.is_hu)


def _is_nifti(path: str) -> bool:
    return str(path).lower().endswith((".nii", ".nii.gz"))


def _read(path: str | Path, frame: int = 0) -> np.ndarray:
    if _is_nifti(str(path)):
        return _scan(str(path)).pixels[frame]
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except (OSError, ValueError):
        raise DataError(f"{path}: unreadable mask") from None


def _rgb(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=-1)
    return a[..., :3]


def decode_bhsd(a: np.ndarray) -> np.ndarray:
    """BHSD colour mask (EDH red, IPH blue, IVH yellow, SAH cyan, SDH green): any colour = hemorrhage."""
    out = np.zeros(a.shape[:2], np.uint8)
    out[_rgb(a).max(axis=-1) > 127] = HEMORRHAGE
    return out


def decode_aisd(a: np.ndarray) -> np.ndarray:
    """AISD mask: white (> 127) = infarct."""
    out = np.zeros(a.shape[:2], np.uint8)
    out[_rgb(a).mean(axis=-1) > 127] = INFARCT
    return out


def decode_cpaisd(a: np.ndarray) -> np.ndarray:
    """CPAISD mask: red core and green penumbra, both = infarct."""
    rgb = _rgb(a).astype(np.int16)
    red = (rgb[..., 0] > 127) & (rgb[..., 1] < 128)
    green = (rgb[..., 1] > 127) & (rgb[..., 0] < 128)
    out = np.zeros(a.shape[:2], np.uint8)
    out[red | green] = INFARCT
    return out


def decode_realtime(a: np.ndarray) -> np.ndarray:
    """Real-time stroke set mask: red hemorrhagic, green ischemic (thresholded: anti-aliased edges)."""
    rgb = _rgb(a).astype(np.int16)
    red = (rgb[..., 0] > 127) & (rgb[..., 1] < 128)
    green = (rgb[..., 1] > 127) & (rgb[..., 0] < 128)
    out = np.zeros(a.shape[:2], np.uint8)
    out[red] = HEMORRHAGE
    out[green] = INFARCT
    return out


def decode_phe(a: np.ndarray) -> np.ndarray:
    """PHE-SICH mask: 255 (> 127) = perihematomal edema."""
    g = a if a.ndim == 2 else _rgb(a).max(axis=-1)
    out = np.zeros(g.shape, np.uint8)
    out[g > 127] = EDEMA
    return out


def decode_ctich_mask(a: np.ndarray) -> np.ndarray:
    """ctich-masks: > 127 = hemorrhage, turned from the raw export's frame into the JPEGs' (numpy.rot90 k=1;
    the resize to the image follows in :func:`decode_sample`)."""
    g = a if a.ndim == 2 else _rgb(a).max(axis=-1)
    out = np.zeros(g.shape, np.uint8)
    out[g > 127] = HEMORRHAGE
    return np.ascontiguousarray(np.rot90(out, k=1))


#: mask kinds drawn on another grid than the image: resized (nearest) onto the image
RESIZED_KINDS = ("ctich-masks",)


def _any_label(cls: int):
    def decode(a: np.ndarray) -> np.ndarray:
        out = np.zeros(a.shape[:2], np.uint8)
        out[(a if a.ndim == 2 else _rgb(a).max(axis=-1)) > 0] = cls
        return out

    decode.__doc__ = f"Any non-zero label = class {cls}."
    return decode


DECODERS = {"bhsd": decode_bhsd, "aisd": decode_aisd, "cpaisd": decode_cpaisd, "realtime": decode_realtime,
            "phe-sich": decode_phe, "bhsd-nifti": _any_label(HEMORRHAGE), "ctich-nifti": _any_label(HEMORRHAGE),
            "teknofest-hemorrhage": _any_label(HEMORRHAGE), "teknofest-infarct": _any_label(INFARCT),
            "ctich-masks": decode_ctich_mask}


def mask_kind(mask_meaning: str | None) -> str | None:
    """The decoder key of a manifest ``mask_meaning`` (its text up to the colon)."""
    if not isinstance(mask_meaning, str) or not mask_meaning:
        return None
    return str(mask_meaning).split(":")[0].strip()


def phe_clot_region(edema: np.ndarray, boxes: list[list[int]]) -> np.ndarray:
    """Where phe-sich clot may lie: inside any box (clot + edema), or inside the filled, dilated edema rim."""
    region = np.zeros(edema.shape, bool)
    h, w = edema.shape
    for x0, y0, x1, y1 in boxes:
        region[max(0, y0):min(h, y1 + 1), max(0, x0):min(w, x1 + 1)] = True
    if edema.any():
        rim = ndi.binary_dilation(edema, iterations=PHE_CLOT_DILATION_PX)
        region |= ndi.binary_fill_holes(rim)
    return region


@dataclass
class MaskSample:
    """A slice's labels in its own pixel grid."""

    target: np.ndarray  # (rows, cols) uint8 class ids
    unknown: np.ndarray  # (rows, cols) uint8 bitmask of unlabelled classes (0 where target > 0)
    labelled: np.ndarray  # (4,) bool: class labelled everywhere on this slice (index 0 always True)


def phe_derived_clot(pixels: np.ndarray, is_hu: bool, edema: np.ndarray, boxes: list[list[int]],
                     min_px: int = PHE_CLOT_MIN_PX) -> np.ndarray:
    """The *derived* phe-sich clot (PHE-SICH masks only the edema): pixels (after a 3x3 median) in the blood
    range of the slice's brain (:func:`~strokescan.preprocessing.density.blood_range`, here of the unfiltered pixels;
    the clot baseline measures the filtered ones)
    inside the clot region (:func:`phe_clot_region`: the lesion boxes and the filled, dilated edema rim) and
    outside the edema; pixels as white as bone count when their white blob lies wholly inside the region (a
    large clot exported through a narrow window is as white as bone; the skull reaches outside any box);
    components of at least ``min_px`` pixels, holes filled. A derived label, not a reader's outline."""
    region = phe_clot_region(edema, boxes)
    cut = blood_range(pixels, is_hu, head_masks(pixels, is_hu).brain) if region.any() else None
    if cut is None:
        return np.zeros(edema.shape, bool)
    img = ndi.median_filter(np.asarray(pixels, np.float32), size=3)
    bright = img >= cut[1]
    labels, n = ndi.label(bright, structure=np.ones((3, 3)))
    outside = np.unique(labels[bright & ~region])
    island = bright & ~np.isin(labels, outside)  # white blobs wholly inside the region: clot, not skull
    clot = (img >= cut[0]) & (~bright | island) & region & ~edema
    labels, n = ndi.label(clot, structure=np.ones((3, 3)))
    if n:
        keep = np.bincount(labels.ravel()) >= min_px
        keep[0] = False
        clot = ndi.binary_fill_holes(keep[labels]) & ~edema
    return clot


def _labelled_classes(row) -> set[int]:
    """The classes a row labels: its ``labelled_classes`` ("1,3") when set, else its source's."""
    given = row.get("labelled_classes")
    if given is not None and not pd.isna(given) and str(given).strip():
        return {int(float(c)) for c in str(given).split(",")}
    return set(SOURCE_LABELLED.get(row["source"], PUBLIC_LABELLED.get(row["source"], ())))


def decode_sample(row, shape: tuple[int, int] | None = None) -> MaskSample:
    """Labels of one segmentation-manifest row (see module doc). ``shape`` is needed for rows without a mask."""
    source = row["source"]
    if source not in SOURCE_LABELLED and source not in PUBLIC_LABELLED:
        raise DataError(f"{source}: not a segmentation source")
    kind = mask_kind(row.get("mask_meaning"))
    mask_path = row.get("mask_path")
    if mask_path is not None and isinstance(mask_path, str) and kind:
        if kind not in DECODERS:
            raise DataError(f"{mask_path}: no decoder for mask kind {kind!r}")
        target = DECODERS[kind](_read(mask_path, _frame(row)))
        if kind in RESIZED_KINDS and shape is not None and target.shape != tuple(shape):
            target = cv2.resize(target, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    else:
        if shape is None:
            raise DataError(f"{row.get('image_path')}: row has no mask and no shape was given")
        target = np.zeros(shape, np.uint8)
    labelled_classes = _labelled_classes(row)
    # A source's decoder may find a class it does not label (realtime red): keep only labelled classes.
    for c in (HEMORRHAGE, EDEMA, INFARCT):
        if c not in labelled_classes:
            target[target == c] = BACKGROUND
    if source == "phe-sich":
        raw = row.get("boxes")
        boxes = json.loads(raw) if isinstance(raw, str) and raw else []
        if boxes or (target == EDEMA).any():
            pixels, is_hu = row_slice(row)
            target[phe_derived_clot(pixels, is_hu, target == EDEMA, boxes) & (target == BACKGROUND)] = HEMORRHAGE
    unknown_bits = ALL_BITS & ~sum(1 << c for c in labelled_classes)
    unknown = np.full(target.shape, unknown_bits, np.uint8)
    unknown[target > 0] = 0
    labelled = np.array([True] + [c in labelled_classes for c in (HEMORRHAGE, EDEMA, INFARCT)])
    return MaskSample(target=target, unknown=unknown, labelled=labelled)


def _lesion_free_sample(m: pd.DataFrame, per_patient: int, seed: int) -> pd.DataFrame:
    """Up to ``per_patient`` label-0 slices per patient, from the middle 20-85 % of its slice range."""
    neg = m[(m["label"] == 0)].copy()
    rng = np.random.default_rng(seed)
    keep = []
    for _, g in neg.groupby("patient", sort=True):
        g = g.sort_values("slice_index")
        n = len(g)
        mid = g.iloc[int(0.2 * n): max(int(0.85 * n), int(0.2 * n) + 1)]
        take = min(per_patient, len(mid))
        if take:
            keep.extend(mid.index[rng.choice(len(mid), size=take, replace=False)])
    return m.loc[sorted(keep)]


def _nifti_grid(path: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Voxel shape and axis codes (e.g. ('L', 'P', 'S')) of a NIfTI header; :class:`DataError` if unreadable."""
    import nibabel as nib

    try:
        img = nib.load(path)
        return tuple(int(n) for n in img.shape[:3]), tuple(nib.aff2axcodes(img.affine))
    except Exception as exc:  # noqa: BLE001 - any header problem means "cannot use this volume"
        raise DataError(f"{path}: unreadable NIfTI header ({type(exc).__name__})") from None


def _volume_slices(m: pd.DataFrame) -> pd.DataFrame:
    """One row per slice of every volume row with a mask; ``label`` = the slice's mask holds a lesion.

    Image and mask must share voxel shape and axis codes (both are reoriented by the same reader, so equal
    headers mean one grid). Volumes without a mask are left out, with a log line saying how many.
    """
    with_mask = m[m["mask_path"].notna()].drop_duplicates("image_path")
    dropped = m.loc[m["mask_path"].isna(), "image_path"].nunique()
    if dropped:
        log.warning("%s: %d volume(s) without a mask file left out", m["source"].iloc[0], dropped)
    rows = []
    for r in with_mask.to_dict("records"):
        grids = [_nifti_grid(r[k]) for k in ("image_path", "mask_path")]
        if grids[0] != grids[1]:
            raise DataError(f"{r['mask_path']}: mask grid {grids[1]} does not match its volume's {grids[0]}")
        mask = _scan(r["mask_path"]).pixels
        lesion = mask.reshape(mask.shape[0], -1).max(axis=1) > 0
        for k, hit in enumerate(lesion):
            rows.append({**r, "frame": k, "slice_index": k, "label": int(hit), "hemorrhage": int(hit),
                         "label_note": "slice of a volume; label = its mask holds a lesion"})
    if not rows:
        raise DataError("no volume with a mask")
    out = pd.DataFrame(rows)
    for col in (*local.SUBTYPES.values(), "fracture"):
        out[col] = pd.NA  # volume- or differently-indexed labels: not this slice's
    return out


def _teknofest_rows(m: pd.DataFrame) -> pd.DataFrame:
    """TEKNOFEST rows with their per-row labelled classes and mask kind (by class folder)."""
    m = m.copy()
    cls = np.where(m["hemorrhage"] == 1, "hemorrhage", np.where(m["ischemic"] == 1, "ischemic", "none"))
    stroke = cls != "none"
    unmasked = stroke & m["mask_path"].isna().to_numpy()
    if unmasked.any():  # as volumes without a mask: left out, counted in the log
        log.warning("teknofest: %d stroke image(s) without MASK/<same stem>.png left out", int(unmasked.sum()))
        m, cls, stroke = m[~unmasked], cls[~unmasked], stroke[~unmasked]
    m["labelled_classes"] = [",".join(map(str, TEKNOFEST_LABELLED[c])) for c in cls]
    m["mask_meaning"] = [{"hemorrhage": "teknofest-hemorrhage: >0 hemorrhage",
                          "ischemic": "teknofest-infarct: >0 infarct"}.get(c) for c in cls]
    m.loc[~stroke, "mask_path"] = None
    return m


def _public_rows(name: str, folder, negatives_per_patient: int, seed: int) -> pd.DataFrame:
    """The segmentation rows of one full public set (see the module doc)."""
    if name not in PUBLIC_LABELLED:
        raise DataError(f"{name}: not a segmentation set (choose from {', '.join(PUBLIC_LABELLED)})")
    m = PUBLIC_LOADERS[name](folder, read_masks=False) if name == "bhsd" else PUBLIC_LOADERS[name](folder)
    volumes = name in ("bhsd", "ctich-nifti")
    if volumes:
        m = finalize(_volume_slices(m), name)
    if name == "ctich-nifti":  # the same people as ctich-kaggle: one id, so one fold
        m["patient"] = [f"ctich-kaggle:{int(p)}" for p in m["source_patient"]]
    if name == "teknofest":
        return _teknofest_rows(m)
    m = m[m["mask_path"].notna()]
    out = pd.concat([m[m["label"] == 1], _lesion_free_sample(m, negatives_per_patient, seed)])
    return out.sort_values(["image_path", "frame"] if volumes else ["image_path"])  # a volume's slices together


def build_segmentation_manifest(root=None, sources: tuple[str, ...] = SEG_SOURCES, ctich_negatives_per_patient: int = 4,
                                seed: int = SEED, public: dict | None = None) -> pd.DataFrame:
    """The rows used for segmentation (manifest columns plus ``labelled_classes``), augmented rows dropped.

    ``public`` maps full public sets (:data:`PUBLIC_LABELLED`) to the folders where they were unpacked; each
    replaces the mini sets cut from it, and contributes its lesion slices plus up to
    ``ctich_negatives_per_patient`` lesion-free slices per patient.
    """
    loaders = {
        "bhsd-mini": local.load_bhsd_mini, "phe-sich": local.load_phe_sich, "aisd-mini": local.load_aisd_mini,
        "cpaisd-mini": local.load_cpaisd_mini, "realtime-mini": local.load_realtime_mini,
        "ctich-kaggle": local.load_ctich_kaggle, "ctich-masks": local.load_ctich_masks,
    }
    public = dict(public or {})
    replaced = {mini for name in public for mini in PUBLIC_REPLACES.get(name, ())}
    frames = []
    for s in sources:
        if s not in loaders:
            raise DataError(f"{s}: not a segmentation source (choose from {', '.join(loaders)})")
        if s in replaced:
            continue
        m = loaders[s](root)
        m = m[~m["augmented"]]
        if s == "ctich-kaggle":
            m = _lesion_free_sample(m, ctich_negatives_per_patient, seed)
        frames.append(m)
    frames += [_public_rows(name, folder, ctich_negatives_per_patient, seed) for name, folder in sorted(public.items())]
    out = pd.concat(frames, ignore_index=True)
    default = out["source"].map(lambda s: ",".join(str(c) for c in SOURCE_LABELLED.get(s, PUBLIC_LABELLED.get(s, ()))))
    given = out["labelled_classes"] if "labelled_classes" in out else pd.Series(None, index=out.index, dtype=object)
    out["labelled_classes"] = given.where(given.notna(), default)
    return out


def make_source_folds(manifest: pd.DataFrame, n_folds: int = 5, seed: int = SEED, committed_ctich: bool = True) -> dict:
    """Patient-grouped folds made per source and merged, so that every source is spread over the folds.

    Sources with at least ``n_folds`` patients use :func:`strokescan.datasets.splits.make_patient_folds`
    (stratified on ``label``); smaller ones (realtime-mini: 3 patients) are dealt round-robin after a seeded
    shuffle. A source whose patient ids are another's (ctich-masks and ctich-nifti use ctich-kaggle's) is split
    with it, so a patient lands in one fold; ctich-kaggle's people keep the committed classifier folds
    (:data:`~strokescan.datasets.splits.CTICH_KAGGLE_FOLDS`) when ``n_folds`` is theirs, so that segmenter and
    classifier hold out the same patients (``committed_ctich=False``: made like the other sources, as before
    issue 19, which reproduces the folds of segmenters trained then). Returns the folds dict of
    :mod:`strokescan.datasets.splits`.
    """
    folds: dict[str, list[str]] = {str(k): [] for k in range(n_folds)}
    group = manifest["patient"].str.split(":").str[0]  # the source, or the set whose ids a source shares
    for i, (src, g) in enumerate(manifest.groupby(group, sort=True)):
        pats = sorted(g["patient"].unique())
        committed = read_folds(CTICH_KAGGLE_FOLDS) if src == "ctich-kaggle" and committed_ctich else None
        if committed is not None and committed["n_folds"] == n_folds:
            fold = {p: k for k, ps in committed["folds"].items() for p in ps}
            missing = sorted(set(pats) - set(fold))
            if missing:
                raise DataError(f"{missing[0]}: not in the committed ctich-kaggle folds ({CTICH_KAGGLE_FOLDS.name})")
            for p in pats:
                folds[fold[p]].append(str(p))
        elif len(pats) >= n_folds:
            f = make_patient_folds(g, n_folds=n_folds, seed=seed, label_col="label")["folds"]
            for k, ps in f.items():
                folds[k].extend(ps)
        else:
            rng = np.random.default_rng(seed + i)
            for j, p in enumerate(rng.permutation(pats)):
                folds[str((j + i) % n_folds)].append(str(p))
    return {"dataset": "segmentation:" + ",".join(sorted(manifest["source"].unique())), "n_folds": n_folds,
            "seed": seed, "label_col": "label",
            "label_rule": "per-source patient-grouped folds, merged; ctich-kaggle's people in the committed folds",
            "folds": {k: sorted(v) for k, v in folds.items()}}


# ----------------------------------------------------------------------------------------------------------
# Rotation of the sources that are not upright (the model-frame mapping is strokescan.core.geometry).


def training_rotation(manifest: pd.DataFrame, load=None) -> dict[str, float]:
    """Angle (degrees counter-clockwise from upright) per patient for rotated sources; other patients 0.

    phe-sich is documented as turned about 90° (face left): per slice the rotation estimator gives the
    midline axis; its front/back choice is unreliable on these slices, so the angle is folded into [0, 180)
    (face to the left, as documented) and the patient gets the circular median of its middle slices.
    """
    load = load or load_scan
    estimator = RotationEstimator()
    out: dict[str, float] = {}
    for p, g in manifest[manifest["source"] == "phe-sich"].groupby("patient", sort=True):
        g = g.sort_values("slice_index")
        n = len(g)
        picks = g.iloc[int(0.4 * n): max(int(0.8 * n), int(0.4 * n) + 1): 2]
        angles = []
        for path in picks["image_path"]:
            scan = load(path)
            angles.append(estimator.estimate(scan.pixels[0], scan.is_hu) % 180.0)
        out[p] = round(circular_median_deg(np.array(angles) * 2.0) / 2.0, 1) if angles else 90.0
    return out
