"""Preprocessing: windowing, intensity, masking, orientation, and the model-input pipeline."""
