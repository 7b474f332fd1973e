"""The REST API's OpenAPI 3.1 description (served at ``/api/v1/openapi.json``)."""

from __future__ import annotations

from strokescan import __version__

_ERROR = {"description": "refused, with a one-line message",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_STUDY_ID = {"name": "study_id", "in": "path", "required": True, "schema": {"type": "integer"}}

OPENAPI: dict = {
    "openapi": "3.1.0",
    "info": {"title": "strokescan", "version": __version__,
             "description": "Hemorrhage detection and segmentation on head CT. Research software: not a diagnosis."},
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "a token from 'strokescan web token USER'"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "Study": {"type": "object", "properties": {
                "id": {"type": "integer"}, "label": {"type": "string"},
                "kind": {"enum": ["dicom", "nifti", "image"]},
                "status": {"enum": ["queued", "running", "done", "failed"]},
                "error": {"type": ["string", "null"], "description": "why the analysis failed (one line)"},
                "created_at": {"type": "string", "format": "date-time"},
                "finished_at": {"type": ["string", "null"], "format": "date-time"},
                "n_slices": {"type": ["integer", "null"]},
                "probability": {"type": ["number", "null"], "description": "scan score (calibrated)"},
                "positive": {"type": ["boolean", "null"]},
                "operating_point": {"type": ["string", "null"], "enum": ["balanced", "sensitive", None]},
                "subtypes": {"type": "object", "additionalProperties": {"type": "number"}},
                "clot_ml": {"type": ["number", "null"], "description": "planimetric hemorrhage volume, mL"},
                "started_at": {"type": ["string", "null"], "format": "date-time"},
                "identifiers": {"type": "object", "additionalProperties": {"type": "string"},
                                "description": "patient_name, patient_id, accession_number, study_date, "
                                               "study_description: only when the operator shows identifiers"},
                "ignored": {"type": "array", "items": {"type": "string"},
                            "description": "on upload: files of no known kind left out of a DICOM upload"},
                "links": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "Result": {"type": "object", "description": "the result document, schema_version 1.x (docs/results.md)"},
            "Feedback": {"type": "object", "required": ["agrees"], "properties": {
                "agrees": {"type": "boolean"}, "note": {"type": "string", "maxLength": 2000}}},
        },
    },
    "paths": {
        "/studies": {
            "post": {"summary": "Upload a study (DICOM files or a zip, one NIfTI, or one PNG/JPEG); analysis runs in "
                                "the background",
                     "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                         "type": "object", "properties": {"files": {"type": "array", "items": {
                             "type": "string", "format": "binary"}}}}}}},
                     "responses": {"202": {"description": "accepted and queued",
                                           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Study"}}}},
                                   "400": _ERROR, "401": _ERROR, "413": _ERROR, "415": _ERROR}},
            "get": {"summary": "Studies in worklist order (flagged first, then arrival)",
                    "parameters": [{"name": "status", "in": "query", "schema": {"enum": ["queued", "running", "done", "failed"]}},
                                   {"name": "flagged", "in": "query", "schema": {"enum": ["1"]}},
                                   {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                                   {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}}],
                    "responses": {"200": {"description": "a page of studies (studies, total, offset, limit)"},
                                  "400": _ERROR, "401": _ERROR}},
        },
        "/studies/{study_id}": {"get": {"summary": "A study's status and headline findings", "parameters": [_STUDY_ID],
                                        "responses": {"200": {"description": "the study", "content": {"application/json": {
                                            "schema": {"$ref": "#/components/schemas/Study"}}}},
                                            "401": _ERROR, "404": _ERROR}},
                                "delete": {"summary": "Delete a study, its files and feedback (admins only; the audit "
                                                      "trail keeps its events)", "parameters": [_STUDY_ID],
                                           "responses": {"204": {"description": "deleted"}, "401": _ERROR,
                                                         "403": _ERROR, "404": _ERROR, "409": _ERROR}}},
        "/studies/{study_id}/result": {"get": {"summary": "The result document", "parameters": [_STUDY_ID],
                                               "responses": {"200": {"description": "result", "content": {"application/json": {
                                                   "schema": {"$ref": "#/components/schemas/Result"}}}},
                                                   "401": _ERROR, "404": _ERROR, "409": _ERROR}}},
        "/studies/{study_id}/masks/{index}.png": {"get": {
            "summary": "One slice's class-id mask (0 background, 1 hemorrhage, 2 edema, 3 infarct)",
            "parameters": [_STUDY_ID, {"name": "index", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "responses": {"200": {"description": "PNG", "content": {"image/png": {}}}, "404": _ERROR, "409": _ERROR}}},
        "/studies/{study_id}/masks.nii.gz": {"get": {"summary": "All masks as a NIfTI volume", "parameters": [_STUDY_ID],
                                                     "responses": {"200": {"description": "NIfTI", "content": {"application/gzip": {}}},
                                                                   "404": _ERROR, "409": _ERROR}}},
        "/studies/{study_id}/feedback": {"post": {
            "summary": "A reader agrees or disagrees with the finding", "parameters": [_STUDY_ID],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Feedback"}}}},
            "responses": {"201": {"description": "stored"}, "400": _ERROR, "404": _ERROR}}},
        "/feedback": {"get": {"summary": "All reader feedback", "responses": {"200": {"description": "the feedback"}}}},
        "/openapi.json": {"get": {"summary": "This description", "security": [], "responses": {"200": {"description": "OpenAPI"}}}},
    },
}
