"""Label making: stage 1 (task-aware selection among the prior methods' outputs), stage 2 (the Fusion Refiner) and
the builder that writes pseudo-labels (CLI: ``python -m fusionfm.pseudolabel``). The prior methods themselves are
:mod:`fusionfm.priors`, the synthetic pairs :mod:`fusionfm.synthetic`, the metrics :mod:`fusionfm.metrics`."""
