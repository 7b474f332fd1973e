"""The lesion classes, defined once: ids in the masks, names in the JSON, colours on overlays, and the
SNOMED CT codes a DICOM SEG or SR names them with (category and type, as highdicom's ``SegmentDescription``
takes them)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


@dataclass(frozen=True)
class Code:
    """A coded concept (value, scheme designator, meaning), as in DICOM's code sequences."""

    value: str
    scheme: str
    meaning: str


MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically abnormal structure")


class LesionClass(IntEnum):
    """Per-pixel class ids of every mask strokescan writes (0 is background)."""

    BACKGROUND = 0
    HEMORRHAGE = 1  # the clot
    EDEMA = 2  # perihematomal edema
    INFARCT = 3  # ischemic infarct

    @property
    def label(self) -> str:
        """Lower-case name used in JSON, file names and tables."""
        return self.name.lower()

    @property
    def colour(self) -> tuple[int, int, int]:
        """RGB colour on overlays (red clot, yellow edema, blue infarct)."""
        return _COLOURS[self]

    @property
    def snomed(self) -> Code:
        """SNOMED CT code of the segmented property type."""
        return _SNOMED[self]


_COLOURS = {
    LesionClass.BACKGROUND: (0, 0, 0),
    LesionClass.HEMORRHAGE: (255, 40, 40),
    LesionClass.EDEMA: (255, 210, 0),
    LesionClass.INFARCT: (40, 140, 255),
}
_SNOMED = {
    LesionClass.BACKGROUND: Code("260787004", "SCT", "Physical object"),
    LesionClass.HEMORRHAGE: Code("50960005", "SCT", "Hemorrhage"),
    LesionClass.EDEMA: Code("79654002", "SCT", "Edema"),
    LesionClass.INFARCT: Code("55641003", "SCT", "Infarct"),
}

#: every class, background first, in id order (the U-Net's output channels)
ALL_CLASSES: tuple[LesionClass, ...] = tuple(LesionClass)
#: the lesion classes, without background
LESION_CLASSES: tuple[LesionClass, ...] = ALL_CLASSES[1:]
N_CLASSES = len(ALL_CLASSES)
#: names in id order, as stored in model plans
CLASS_NAMES: tuple[str, ...] = tuple(c.label for c in ALL_CLASSES)
#: the members by name, for code that does arithmetic on ids (``1 << HEMORRHAGE``)
BACKGROUND, HEMORRHAGE, EDEMA, INFARCT = ALL_CLASSES

#: hemorrhage subtypes, in the order of the detector's outputs after "any" (CT-ICH's five labels)
HEMORRHAGE_SUBTYPES: tuple[str, ...] = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
#: the abbreviations clinicians read
SUBTYPE_ABBREVIATIONS: dict[str, str] = {
    "epidural": "EDH", "intraparenchymal": "IPH", "intraventricular": "IVH", "subarachnoid": "SAH", "subdural": "SDH",
}
#: the detector's outputs: any hemorrhage, then each subtype
DETECTION_OUTPUTS: tuple[str, ...] = ("any", *HEMORRHAGE_SUBTYPES)
