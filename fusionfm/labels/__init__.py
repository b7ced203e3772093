"""Label making: prior fusion methods, synthetic pairs with ground truth, stage 1 (task-aware selection),
stage 2 (the Fusion Refiner) and the builder that writes pseudo-labels (CLI: ``python -m fusionfm.pseudolabel``)."""
