"""The ICH score (Hemphill et al., Stroke 2001): image findings beside the patient's bedside data.

    score = GCS points (3-4: 2, 5-12: 1, 13-15: 0) + clot volume >= 30 mL (1) + intraventricular blood (1)
            + infratentorial origin (1) + age >= 80 (1)                                   -> 0..6

Each component says where its value came from: ``clinician`` (entered) or ``strokescan`` (measured on the scan:
only the planimetric clot volume, and only when the scan's spacing is known). strokescan does not supply
intraventricular blood or infratentorial origin: its detector's IVH output is not accurate enough (ROC-AUC 0.42
on CT-ICH, docs/classifier.md) and it does not localise the origin. A component nobody gave leaves the score
incomplete: ``total`` is then None and ``possible`` gives the range it could take.

The 30-day mortality per score is the derivation cohort's (Hemphill 2001, n = 152): a population figure, not
a prognosis for this patient; the original authors warn against using it alone to limit care.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strokescan.errors import InputError
from strokescan.inference.results import ScanResult

VOLUME_CUT_ML = 30.0
AGE_CUT_YEARS = 80
#: 30-day mortality (%) by total score in the derivation cohort (6: none observed there, 100 % expected)
MORTALITY_30D_PERCENT = {0: 0, 1: 13, 2: 26, 3: 72, 4: 97, 5: 100, 6: 100}
CLINICIAN, STROKESCAN = "clinician", "strokescan"


def gcs_points(gcs: int) -> int:
    """Points of a Glasgow Coma Scale total (3..15)."""
    if not 3 <= gcs <= 15:
        raise InputError(f"GCS {gcs}: a Glasgow Coma Scale total is 3 to 15")
    return 2 if gcs <= 4 else 1 if gcs <= 12 else 0


@dataclass
class Component:
    """One term of the score: the value, its points (None when the value is missing) and its source."""

    name: str
    value: Any
    points: int | None
    max_points: int
    source: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "points": self.points, "max_points": self.max_points, "source": self.source}


@dataclass
class IchScore:
    components: list[Component] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what a reader should check before using the total

    @property
    def complete(self) -> bool:
        return all(c.points is not None for c in self.components)

    @property
    def total(self) -> int | None:
        return sum(c.points for c in self.components) if self.complete else None  # type: ignore[misc]

    @property
    def possible(self) -> tuple[int, int]:
        """The lowest and highest totals the missing components allow."""
        known = sum(c.points or 0 for c in self.components)
        return known, known + sum(c.max_points for c in self.components if c.points is None)

    def to_dict(self) -> dict[str, Any]:
        return {"score": "ICH score (Hemphill 2001)", "total": self.total, "possible": list(self.possible),
                "missing": [c.name for c in self.components if c.points is None],
                "mortality_30d_percent_in_derivation_cohort": MORTALITY_30D_PERCENT.get(self.total)
                if self.total is not None else None,
                "components": {c.name: c.to_dict() for c in self.components}, "notes": list(self.notes)}


def _flag(name: str, value: bool | None, source: str | None) -> Component:
    return Component(name, value, None if value is None else int(value), 1, source if value is not None else None)


def ich_score(gcs: int | None = None, age: int | None = None, volume_ml: float | None = None,
              ivh: bool | None = None, infratentorial: bool | None = None,
              volume_source: str = CLINICIAN) -> IchScore:
    """The score from what is known; ``None`` = not given."""
    if age is not None and not 0 <= age <= 130:
        raise InputError(f"age {age}: expected years, 0 to 130")
    if volume_ml is not None and not 0 <= volume_ml < 10_000:
        raise InputError(f"clot volume {volume_ml} mL: expected 0 to 10000 mL")
    return IchScore([
        Component("gcs", gcs, None if gcs is None else gcs_points(gcs), 2, CLINICIAN if gcs is not None else None),
        Component("volume_ml", None if volume_ml is None else round(float(volume_ml), 1),
                  None if volume_ml is None else int(volume_ml >= VOLUME_CUT_ML), 1,
                  volume_source if volume_ml is not None else None),
        _flag("intraventricular", ivh, CLINICIAN),
        _flag("infratentorial", infratentorial, CLINICIAN),
        Component("age", age, None if age is None else int(age >= AGE_CUT_YEARS), 1, CLINICIAN if age is not None else None),
    ])


def measured_clot_ml(result: ScanResult) -> float | None:
    """The planimetric clot volume (mL) of a segmented volume with known spacing, else None (a single 2-D slice
    has an area, never a volume)."""
    q = result.quantification
    if q is None or not q.has_volume_ml:
        return None
    return float(q.classes["hemorrhage"].total)


def _no_volume_reason(result: ScanResult | None) -> str:
    q = result.quantification if result is not None else None
    if q is not None and not q.is_volume:
        return "no clot volume: a single 2-D slice gives an area, not a volume; give the volume"
    return "no clot volume: the scan was not segmented or its spacing is unknown; give the volume"


def ich_score_measured(measured_ml: float | None, flagged: bool, gcs: int | None = None, age: int | None = None,
                       ivh: bool | None = None, infratentorial: bool | None = None,
                       volume_ml: float | None = None, no_volume_note: str | None = None) -> IchScore:
    """The score with strokescan's measured clot volume (None: not measured), unless the clinician gives
    ``volume_ml``; ``flagged``: whether the detector flagged the scan (a volume it does not back gets a note);
    ``no_volume_note``: why there is no measured volume (the note then says so)."""
    if volume_ml is not None:
        return ich_score(gcs, age, volume_ml, ivh, infratentorial, CLINICIAN)
    score = ich_score(gcs, age, measured_ml, ivh, infratentorial, STROKESCAN)
    if measured_ml is None:
        score.notes.append(no_volume_note or _no_volume_reason(None))
    elif measured_ml > 0 and not flagged:
        score.notes.append(f"the detector did not flag this scan, yet the segmenter measured {measured_ml:.1f} mL: "
                           "check the overlays (thin strips under the skull are a known false positive)")
    elif flagged and measured_ml == 0:
        score.notes.append("the detector flagged this scan but the segmenter outlined no clot: measure it by hand")
    return score


def ich_score_for(result: ScanResult, gcs: int | None = None, age: int | None = None, ivh: bool | None = None,
                  infratentorial: bool | None = None, volume_ml: float | None = None) -> IchScore:
    """The score of one analysed scan (:func:`ich_score_measured` with its clot volume and flag)."""
    return ich_score_measured(measured_clot_ml(result), result.positive, gcs, age, ivh, infratentorial, volume_ml,
                              _no_volume_reason(result))
