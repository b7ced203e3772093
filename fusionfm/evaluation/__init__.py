"""Evaluation: the plain-average baseline, the validation split and its benchmark-aligned score, the ranking among
methods (CLI: ``python -m fusionfm.evaluate``). The metrics are :mod:`fusionfm.metrics`."""
