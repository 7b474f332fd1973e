"""A :class:`~strokescan.inference.ScanResult` as FHIR: a DiagnosticReport with its Observations (and the
Device that made them) in one transaction Bundle, written to a folder or POSTed to a FHIR server's base URL.

Resources are built with ``fhir.resources.R4B``: fhir.resources 8 ships R5 (its default), R4B and STU3, not
R4 itself; DiagnosticReport, Observation, Device and Bundle are the same in R4 and R4B for every element used
here, so the JSON is valid R4 (``fhirVersion`` 4.0.1 servers such as HAPI take it).

No patient identifier is written unless the operator enables identifiers: the subject is then the DICOM
PatientID under the site's identifier system (``Reference.identifier``, which a FHIR server resolves to its
Patient), else a placeholder reference (``Patient/unknown`` by default, or whatever reference the site
configures). The DICOM StudyInstanceUID, which identifies a study hence a patient, is added (as the report's
identifier and its ``imagingStudy`` reference by identifier) only when identifiers are enabled too.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntryRequest
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.device import Device, DeviceDeviceName, DeviceVersion
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.observation import Observation, ObservationComponent
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.reference import Reference

from strokescan import __version__
from strokescan.core.labels import HEMORRHAGE, LESION_CLASSES
from strokescan.inference import ScanResult
from strokescan.inference.results import volumes_json

NOTICE = "strokescan: research software, not a diagnosis"
LOINC, SNOMED, UCUM = "http://loinc.org", "http://snomed.info/sct", "http://unitsofmeasure.org"
LOCAL = "urn:strokescan:codes"  # for concepts without a standard code (the scan probability, the flag)
DEFAULT_SUBJECT = "Patient/unknown"


@dataclass(frozen=True)
class FhirSettings:
    """Where FHIR results go: a folder, a FHIR base URL (POST of a transaction Bundle), or both."""

    folder: Path | None = None
    url: str | None = None
    subject_reference: str = DEFAULT_SUBJECT  # a placeholder unless the site configures a real reference
    include_study_uid: bool = False  # the StudyInstanceUID as the report's identifier (identifying: off by default)
    patient_identifier_system: str | None = None  # with include_study_uid: the subject by PatientID in this system
    timeout_s: float = 10.0
    headers: tuple[tuple[str, str], ...] = ()  # e.g. (("Authorization", "Bearer ..."),)


def _concept(system: str, code: str, display: str) -> CodeableConcept:
    return CodeableConcept(coding=[Coding(system=system, code=code, display=display)], text=display)


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_bundle(result: ScanResult, subject_reference: str = DEFAULT_SUBJECT,
                 study_instance_uid: str | None = None, issued: str | None = None,
                 patient_id: str | None = None, patient_identifier_system: str | None = None) -> Bundle:
    """A transaction Bundle: Device, one Observation per finding, and the DiagnosticReport naming them. With
    ``patient_id`` and ``patient_identifier_system`` the subject is that identifier; with ``study_instance_uid``
    the report names the ImagingStudy by its DICOM UID."""
    issued = issued or _now()
    subject = (Reference(identifier=Identifier(system=patient_identifier_system, value=str(patient_id)))
               if patient_id and patient_identifier_system else Reference(reference=subject_reference))
    version = str(result.model.get("strokescan") or __version__)
    device_urn = _urn()
    device = Device(
        deviceName=[DeviceDeviceName(name="strokescan", type="manufacturer-name")],
        version=[DeviceVersion(value=version)] + [
            DeviceVersion(type=CodeableConcept(text=k), value=str(v)) for k, v in sorted(result.model.items())
            if k != "strokescan"],
        note=[{"text": NOTICE}],
    )
    category = [_concept("http://terminology.hl7.org/CodeSystem/observation-category", "imaging", "Imaging")]

    def observation(code: CodeableConcept, **value) -> tuple[str, Observation]:
        return _urn(), Observation(status="preliminary", category=category, code=code, subject=subject,
                                   effectiveDateTime=issued, issued=issued, device=Reference(reference=device_urn),
                                   note=[{"text": NOTICE}], **value)

    observations = [observation(
        _concept(LOCAL, "hemorrhage-probability", "Probability of intracranial hemorrhage (strokescan)"),
        valueQuantity=Quantity(value=round(float(result.probability), 4), unit="1", system=UCUM, code="1"),
        interpretation=[_concept("http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                 "POS" if result.positive else "NEG",
                                 "Positive" if result.positive else "Negative")],
        component=[ObservationComponent(code=_concept(LOCAL, "operating-point", "Operating point"),
                                        valueString=result.operating_point)],
    )]
    volumes = volumes_json(result.quantification) if result.quantification is not None else {}
    for cls in LESION_CLASSES:
        entry = volumes.get(cls.label)
        if entry is None:
            continue
        unit = {"mL": "mL", "mm2": "mm2", "px": "{pixels}"}.get(entry["unit"], "{voxels}")
        code = _concept(SNOMED, "118565006", "Volume") if "volume" in entry else _concept(SNOMED, "42798000", "Area")
        observations.append(observation(
            code, bodySite=None,
            valueQuantity=Quantity(value=float(entry["volume"] if "volume" in entry else entry["area"]), unit=unit,
                                   system=UCUM, code=unit),
            component=[ObservationComponent(code=_concept(LOCAL, "lesion-class", "Lesion class"),
                                            valueCodeableConcept=_concept(SNOMED, cls.snomed.value, cls.snomed.meaning)),
                       ObservationComponent(code=_concept(LOCAL, "lesion-count", "Number of lesions"),
                                            valueInteger=int(entry.get("n_lesions", 0)))],
        ))
    flagged = "suspected" if result.positive else "not flagged"
    report = DiagnosticReport(
        status="preliminary",
        category=[_concept("http://terminology.hl7.org/CodeSystem/v2-0074", "RAD", "Radiology")],
        code=_concept(LOINC, "24725-4", "CT Head"), subject=subject, effectiveDateTime=issued, issued=issued,
        result=[Reference(reference=urn) for urn, _ in observations],
        conclusion=f"{HEMORRHAGE.snomed.meaning} {flagged} (probability {result.probability:.2f}, "
                   f"{result.operating_point} operating point). {NOTICE}.",
        identifier=[Identifier(system="urn:dicom:uid", value=f"urn:oid:{study_instance_uid}")]
        if study_instance_uid else None,
        imagingStudy=[Reference(type="ImagingStudy", identifier=Identifier(
            system="urn:dicom:uid", value=f"urn:oid:{study_instance_uid}"))] if study_instance_uid else None,
    )
    entries = [(device_urn, device), *observations, (_urn(), report)]
    return Bundle(type="transaction", entry=[
        BundleEntry(fullUrl=urn, resource=res, request=BundleEntryRequest(method="POST", url=res.get_resource_type()))
        for urn, res in entries])


def bundle_json(bundle: Bundle) -> bytes:
    return bundle.model_dump_json(exclude_none=True).encode()


def write_bundle(bundle: Bundle, folder: Path) -> Path:
    """Write the Bundle durably (temporary file, fsync, rename) as ``report-<hash>.json``; returns the path."""
    data = bundle_json(bundle)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"report-{hashlib.sha256(data).hexdigest()[:16]}.json"
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


class FhirPostError(RuntimeError):
    """The FHIR server refused the Bundle or could not be reached (the message names the status, not the data)."""


def post_bundle(bundle: Bundle, url: str, timeout_s: float = 10.0, headers: tuple[tuple[str, str], ...] = ()) -> int:
    """POST the transaction Bundle to the FHIR base ``url``; returns the HTTP status (2xx), else raises."""
    request = urllib.request.Request(url.rstrip("/") or url, data=bundle_json(bundle), method="POST", headers={
        "Content-Type": "application/fhir+json", "Accept": "application/fhir+json", **dict(headers)})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - a configured URL
            status = response.status
    except urllib.error.HTTPError as error:
        raise FhirPostError(f"FHIR server answered HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        raise FhirPostError(f"FHIR server unreachable ({type(error).__name__})") from None
    if not 200 <= status < 300:
        raise FhirPostError(f"FHIR server answered HTTP {status}")
    return status


def deliver(result: ScanResult, settings: FhirSettings, study_instance_uid: str | None = None,
            patient_id: str | None = None) -> Bundle:
    """Build the Bundle and send it where ``settings`` say (folder first, so a failed POST leaves a copy).
    The study UID and the patient ID are used only when ``settings`` enable identifiers."""
    identifying = settings.include_study_uid
    bundle = build_bundle(result, settings.subject_reference, study_instance_uid if identifying else None,
                          patient_id=str(patient_id).strip() or None if identifying and patient_id else None,
                          patient_identifier_system=settings.patient_identifier_system if identifying else None)
    if settings.folder is not None:
        write_bundle(bundle, settings.folder)
    if settings.url:
        post_bundle(bundle, settings.url, settings.timeout_s, settings.headers)
    return bundle
