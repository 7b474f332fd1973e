"""The application layer: what a front end needs on top of the Predictor (batch runs and the CLI now; the web
app and the DICOM listener later). Nothing below imports it."""
