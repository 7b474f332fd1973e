"""Do the heat maps point at the blood? Localisation metrics against reference lesions, trivial baselines,
patient-bootstrap intervals, and the sanity checks of Adebayo et al. (2018).

Localisation (every map and mask on the scan's own pixel grid):

pointing game
    hit when the map's maximum lies inside the reference lesion dilated by ``tolerance_px`` (5) pixels; a map
    without a peak (zero everywhere) misses. For maps whose maximum is shared by many pixels (the baselines)
    the hit is the *expected* hit of a random tie-break: the share of the tied pixels inside the region.
energy share
    the share of the map's total inside the (undilated) lesion.

Baselines that use no model: ``brain_mask`` (a map equal to 1 on the brain: its expected hit is the share of
brain pixels in the dilated lesion), ``blood_channel`` (the detector's third input channel, the blood-range
stretch of the brain, mapped back: hits by tie-break as above) and ``blood_channel_smoothed`` (the same after a
Gaussian blur, so that the densest bright blob wins). A method is only informative where it beats them.

Sanity checks: :func:`cascading_randomisation` re-initialises the detector from the top (fc and slice context,
head, block 15, block 14, ...) and :func:`map_similarity` compares each step's maps with the trained model's
(Spearman rank correlation, SSIM). A map that does not change when the weights it should depend on are
destroyed explains the input, not the model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import torch
from scipy import ndimage as ndi
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from strokescan.config import SEED
from strokescan.evaluation.metrics import N_BOOTSTRAP, patient_bootstrap
from strokescan.models.classifier import SliceClassifier

TOLERANCE_PX = 5

#: lesion size bins: the lesion's area as a share of the brain's on that slice
SIZE_BINS = ((0.0, 0.01, "small (< 1 % of brain)"), (0.01, 0.05, "medium (1-5 %)"), (0.05, np.inf, "large (>= 5 %)"))


# ----------------------------------------------------------------------------------------------------------
# Localisation


def dilate(mask: np.ndarray, px: int = TOLERANCE_PX) -> np.ndarray:
    """``mask`` grown by ``px`` pixels (Euclidean: a disk)."""
    mask = np.asarray(mask, bool)
    if px <= 0 or not mask.any():
        return mask.copy()
    return ndi.distance_transform_edt(~mask) <= px


def boxes_mask(boxes: list[list[int]], shape: tuple[int, int]) -> np.ndarray:
    """Union of Pascal-VOC boxes [xmin, ymin, xmax, ymax] (inclusive) on a (rows, cols) grid."""
    out = np.zeros(shape, bool)
    h, w = shape
    for x0, y0, x1, y1 in boxes:
        out[max(0, int(y0)):min(h, int(y1) + 1), max(0, int(x0)):min(w, int(x1) + 1)] = True
    return out


def pointing_hit(peak: tuple[int, int] | None, lesion: np.ndarray, tolerance_px: int = TOLERANCE_PX,
                 region: np.ndarray | None = None) -> float:
    """1.0 when ``peak`` (row, col) lies in the lesion dilated by ``tolerance_px`` (pass ``region`` to reuse a
    dilation), else 0.0; a missing peak misses."""
    if peak is None:
        return 0.0
    region = dilate(lesion, tolerance_px) if region is None else region
    r, c = peak
    return float(0 <= r < region.shape[0] and 0 <= c < region.shape[1] and region[r, c])


def tied_pointing_hit(heat: np.ndarray, lesion: np.ndarray, tolerance_px: int = TOLERANCE_PX,
                      region: np.ndarray | None = None, rtol: float = 1e-6) -> float:
    """Expected pointing hit of a random tie-break among the pixels at the map's maximum (0 for a zero map)."""
    heat = np.asarray(heat, float)
    top = heat.max() if heat.size else 0.0
    if top <= 0:
        return 0.0
    region = dilate(lesion, tolerance_px) if region is None else region
    tied = heat >= top * (1 - rtol)
    return float(region[tied].mean())


def energy_share(heat: np.ndarray, lesion: np.ndarray) -> float:
    """The share of the map's total inside ``lesion`` (NaN for a zero map)."""
    heat = np.clip(np.asarray(heat, float), 0, None)
    total = heat.sum()
    return float(heat[np.asarray(lesion, bool)].sum() / total) if total > 0 else float("nan")


def localisation(heat: np.ndarray, peak: tuple[int, int] | None, lesion: np.ndarray,
                 tolerance_px: int = TOLERANCE_PX, region: np.ndarray | None = None) -> dict[str, float]:
    """Pointing hit and energy share of one map against one lesion."""
    region = dilate(lesion, tolerance_px) if region is None else region
    return {"hit": pointing_hit(peak, lesion, tolerance_px, region), "energy": energy_share(heat, lesion)}


def baseline_scores(brain: np.ndarray, blood: np.ndarray, lesion: np.ndarray, tolerance_px: int = TOLERANCE_PX,
                    smooth_sigma_px: float = 8.0) -> dict[str, dict[str, float]]:
    """The model-free baselines of one slice (see module doc): ``brain`` mask and ``blood`` channel (mapped back
    to the scan grid), each scored like a heat map."""
    region = dilate(lesion, tolerance_px)
    brain = np.asarray(brain, bool)
    blood = np.clip(np.asarray(blood, float), 0, None)
    smoothed = ndi.gaussian_filter(blood, smooth_sigma_px) if blood.any() else blood
    return {
        "brain_mask": {"hit": float(region[brain].mean()) if brain.any() else 0.0,
                       "energy": energy_share(brain.astype(float), lesion)},
        "blood_channel": {"hit": tied_pointing_hit(blood, lesion, tolerance_px, region),
                          "energy": energy_share(blood, lesion)},
        "blood_channel_smoothed": {"hit": tied_pointing_hit(smoothed, lesion, tolerance_px, region),
                                   "energy": energy_share(smoothed, lesion)},
    }


def size_bin(lesion_share_of_brain: float) -> str:
    for lo, hi, name in SIZE_BINS:
        if lo <= lesion_share_of_brain < hi:
            return name
    return SIZE_BINS[-1][2]


def mean_with_ci(frame: pd.DataFrame, columns: list[str], n_boot: int = N_BOOTSTRAP, seed: int = SEED
                 ) -> dict[str, dict[str, float]]:
    """Mean of each column with its 95 % patient-bootstrap interval (``frame`` needs ``patient``); NaNs skipped."""
    if frame.empty:
        return {c: {"value": float("nan"), "ci95": [float("nan"), float("nan")]} for c in columns}
    return patient_bootstrap(frame.reset_index(drop=True), lambda f: {c: float(np.nanmean(f[c])) if f[c].notna().any()
                                                                      else float("nan") for c in columns},
                             n_boot=n_boot, seed=seed)


def paired_difference(frame: pd.DataFrame, a: str, b: str, n_boot: int = N_BOOTSTRAP, seed: int = SEED
                      ) -> dict[str, dict[str, float]]:
    """Means of columns ``a`` and ``b`` and of their per-slice difference, with paired patient-bootstrap 95 %
    intervals (the same resampled patients for both)."""
    f = frame[["patient", a, b]].dropna().reset_index(drop=True)
    if f.empty:
        nan = {"value": float("nan"), "ci95": [float("nan"), float("nan")]}
        return {"a": nan, "b": nan, "difference": nan}
    return patient_bootstrap(f, lambda g: {"a": float(g[a].mean()), "b": float(g[b].mean()),
                                           "difference": float((g[a] - g[b]).mean())}, n_boot=n_boot, seed=seed)


def grouped_table(frame: pd.DataFrame, group: str, columns: list[str], n_boot: int = N_BOOTSTRAP) -> pd.DataFrame:
    """One row per value of ``group``: n slices, n patients, and each column's mean [95 % CI]."""
    rows = []
    for name, g in frame.groupby(group, sort=True):
        stats = mean_with_ci(g, columns, n_boot)
        row = {group: name, "n_slices": len(g), "n_patients": g["patient"].nunique()}
        for c in columns:
            row[c] = stats[c]
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------
# Sanity checks


#: the cascade of :func:`cascading_randomisation`, top first: (step name, module names of SliceClassifier)
CASCADE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("fc + context", ("fc", "context")),
    ("head", ("head",)),
    ("block 15", ("top_blocks.1",)),
    ("block 14", ("top_blocks.0",)),
    ("block 13", ("frozen_blocks.13",)),
    ("blocks 11-12", ("frozen_blocks.12", "frozen_blocks.11")),
    ("blocks 8-10", ("frozen_blocks.10", "frozen_blocks.9", "frozen_blocks.8")),
    ("blocks 0-7 + stem", tuple(f"frozen_blocks.{i}" for i in range(7, -1, -1)) + ("stem",)),
)
#: the last step of the cascade that still re-initialises only trained layers (the top: blocks 14-15 up)
LAST_TRAINED_STEP = "block 14"


def reinitialise(module: nn.Module) -> None:
    """Fresh random weights for every layer of ``module`` (PyTorch's default initialisation; batch norms back to
    weight 1, bias 0 and unit running statistics)."""
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def cascading_randomisation(model: SliceClassifier, seed: int = SEED, cascade=CASCADE
                            ) -> Iterator[tuple[str, SliceClassifier]]:
    """Copies of ``model`` with more and more layers re-initialised, top first: yields (step, model) after each
    step of ``cascade``; ``model`` itself is left as it is."""
    current = copy.deepcopy(model).eval()
    modules = dict(current.named_modules())
    torch.manual_seed(seed)
    for step, names in cascade:
        for name in names:
            reinitialise(modules[name])
        yield step, copy.deepcopy(current).eval()


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps' pixels (0 when either is constant)."""
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two maps in [0, 1] (skimage, data range 1)."""
    return float(structural_similarity(np.asarray(a, float), np.asarray(b, float), data_range=1.0))


def map_similarity(reference: np.ndarray, other: np.ndarray) -> pd.DataFrame:
    """Per map pair of (N, H, W) stacks: Spearman rank correlation and SSIM."""
    return pd.DataFrame({"spearman": [rank_correlation(r, o) for r, o in zip(reference, other)],
                         "ssim": [ssim(r, o) for r, o in zip(reference, other)]})


def randomisation_table(reference: np.ndarray, maps_of: Callable[[SliceClassifier], np.ndarray],
                        model: SliceClassifier, seed: int = SEED) -> pd.DataFrame:
    """One row per cascade step: mean and spread of the Spearman correlation and SSIM of that step's maps
    (``maps_of(model)``: (N, H, W)) with ``reference`` (the trained model's maps of the same inputs)."""
    rows = []
    for step, randomised in cascading_randomisation(model, seed):
        sim = map_similarity(reference, maps_of(randomised))
        rows.append(summarise_similarity(sim, step))
    return pd.DataFrame(rows)


def summarise_similarity(sim: pd.DataFrame, step: str) -> dict:
    return {"step": step, "n_maps": len(sim),
            "spearman_mean": float(sim["spearman"].mean()), "spearman_median": float(sim["spearman"].median()),
            "spearman_q10_q90": [float(sim["spearman"].quantile(0.1)), float(sim["spearman"].quantile(0.9))],
            "ssim_mean": float(sim["ssim"].mean()), "ssim_median": float(sim["ssim"].median())}


#: a sanity check passes when the mean rank correlation with the trained model's maps falls below this
#: (stated before the run; SSIM is reported beside it)
PASS_SPEARMAN = 0.5
