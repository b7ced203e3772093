"""Evaluation: the fusion metrics, the plain-average baseline, quality scores and the ranking among methods
(CLI: ``python -m fusionfm.evaluate``)."""
