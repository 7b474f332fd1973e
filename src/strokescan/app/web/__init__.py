"""The web app (Flask): worklist, viewer, upload, REST API."""
