"""Hospital integration: results as DICOM (SEG, SR, key image) and FHIR, and a DICOM listener (Storage SCP).

See docs/integration.md. Nothing here logs or prints a patient identifier or a DICOM UID.
"""
