"""What the models were made for: axial CT of the head, or the 8-bit brain-window JPEG/PNG exports they were
trained on. :func:`scope_problem` says in one line why a readable scan is something else.

It reads only header facts the readers keep on the :class:`~strokescan.io.scan.Scan` (modality, SOP class,
body part, image type, slice orientation), none of which identifies a patient. Where a fact is missing the
scan is given the benefit of the doubt: an absent BodyPartExamined is not a refusal.
"""

from __future__ import annotations

import math

from strokescan.errors import OutOfScopeError
from strokescan.io.scan import Scan, sop_class_name

MAX_TILT_FROM_AXIAL_DEG = 30.0  # slice normal vs the head's z axis: gantry tilts (up to ~25 degrees) pass
HEAD_BODY_PARTS = frozenset({"HEAD", "BRAIN", "SKULL", "HEADNECK", "CEREBRUM", "CRANIUM"})
LOCALIZER_TYPES = frozenset({"LOCALIZER", "SCOUT", "TOPOGRAM"})


def _non_image_class(uid: str | None) -> str | None:
    """The name of a standard SOP class that holds no image the models could read (SEG, SR, RT...), else None.

    A private or unknown class is not judged here: the modality decides.
    """
    name = sop_class_name(uid)
    if name is None or name == str(uid).strip():
        return None
    if "Image Storage" in name:  # CT, Enhanced CT, Secondary Capture, MR, US...: the modality decides
        return None
    return name


def tilt_from_axial_deg(scan: Scan) -> float | None:
    """Angle in degrees between the slices' normal and the patient's head-foot (z) axis; None when unknown."""
    if scan.slice_normal is None:
        return None
    x, y, z = scan.slice_normal
    length = math.sqrt(x * x + y * y + z * z)
    if length == 0:
        return None
    return math.degrees(math.acos(min(1.0, abs(z) / length)))


def scope_problem(scan: Scan) -> str | None:
    """One line saying why the models were not made for ``scan``, or None when it is in scope.

    Out of scope: a DICOM object that is not an image (SEG, SR, RT dose/plan/structure set, presentation
    state...); a modality other than CT (MR, CR, US, NM...; a NIfTI volume without Hounsfield units); a
    BodyPartExamined that is not the head; a localizer (scout) image; slices more than
    :data:`MAX_TILT_FROM_AXIAL_DEG` from axial (sagittal or coronal reformats). JPEG/PNG slices are the
    windowed exports the models were trained on and are in scope.
    """
    if scan.source_format == "image":
        return None
    non_image = _non_image_class(scan.sop_class_uid)
    if non_image is not None:
        return f"SOP class {non_image}: not an image the models analyse (they read axial CT of the head)"
    modality = (scan.modality or "").strip().upper()
    if scan.source_format == "nifti" and not scan.is_hu:
        return "the NIfTI values are not Hounsfield units, so not a CT volume (the models read head CT)"
    if modality != "CT":
        return f"modality {modality or 'unknown'}, not CT (the models read CT of the head only)"
    if scan.body_part and scan.body_part.replace(" ", "").replace("_", "").replace("-", "") not in HEAD_BODY_PARTS:
        return f"body part examined is {scan.body_part}, not the head"
    if LOCALIZER_TYPES & set(scan.image_type):
        return "a localizer (scout) image, not a slice of an axial series"
    tilt = tilt_from_axial_deg(scan)
    if tilt is not None and tilt > MAX_TILT_FROM_AXIAL_DEG:
        kind = scan.orientation if scan.orientation and scan.orientation != "axial" else "oblique"
        return (
            f"{kind} slices ({tilt:.0f} degrees from axial, over {MAX_TILT_FROM_AXIAL_DEG:.0f}): "
            "the models read axial slices only"
        )
    return None


def require_in_scope(scan: Scan) -> None:
    """Raise :class:`~strokescan.errors.OutOfScopeError` naming the input when :func:`scope_problem` finds one."""
    reason = scope_problem(scan)
    if reason is not None:
        raise OutOfScopeError(f"{scan.source_path}: out of scope: {reason}", reason)
