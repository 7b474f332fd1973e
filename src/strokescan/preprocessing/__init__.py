"""Preprocessing: head masks and the model-input pipeline. It takes a rotation angle, never estimates one
(the estimator is :mod:`strokescan.models.rotation`)."""
