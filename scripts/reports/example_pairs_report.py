"""Artifacts and sharpness of models on the first example pair of every task, against the built-in priors.

    python scripts/reports/example_pairs_report.py MODEL [MODEL ...]

For each example pair in examples/ (the app's, one per task variant): the fused image's Nyquist ratio and border
band (fusionfm.evaluation.artifacts), and its Qabf and SF next to the plain average's, the median built-in prior's
and the best built-in prior's. One line per pair.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fusionfm import FusionFMPipeline, load_image
from fusionfm.evaluation.artifacts import border_band, nyquist_ratio
from fusionfm.metrics.fusion import qabf, spatial_frequency, to_gray_255
from fusionfm.priors import priors_for, run_prior

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PAIRS = [("IVF", "IVF/RoadScene_FLIR_08021_ir.jpg", "IVF/RoadScene_FLIR_08021_vi.jpg"),
         ("IVF", "IVF/TNO_07_ir.png", "IVF/TNO_07_vi.png"),
         ("MIF-CT", "MIF-CT/Harvard_MRI_CT_20_mri.png", "MIF-CT/Harvard_MRI_CT_20_ct.png"),
         ("MIF-PET", "MIF-PET/Harvard_MRI_PET_31_mri.png", "MIF-PET/Harvard_MRI_PET_31_pet.png"),
         ("MIF-SPECT", "MIF-SPECT/Harvard_MRI_SPECT_69_mri.png", "MIF-SPECT/Harvard_MRI_SPECT_69_spect.png"),
         ("MEF", "MEF/MEFB_ICCV_11_under.jpg", "MEF/MEFB_ICCV_11_over.jpg"),
         ("MFF", "MFF/MFIFB_lytro_01_a.jpg", "MFF/MFIFB_lytro_01_b.jpg")]


def median(values: dict[str, float]) -> float:
    """The middle value (the upper middle for an even count), as the docs tables report it."""
    return sorted(values.values())[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()
    for model in args.models:
        pipeline = FusionFMPipeline.from_pretrained(model)
        pipeline.set_progress_bar_config(disable=True)
        print(model)
        for task, path_a, path_b in PAIRS:
            image_a, image_b = load_image(EXAMPLES / path_a), load_image(EXAMPLES / path_b)
            tensor_a, tensor_b = (pipeline.image_processor.to_tensor_list(x)[0][None] for x in (image_a, image_b))
            fused = to_gray_255(pipeline(image_a, image_b, task=task, output_type="pt").images)
            gray_a, gray_b = to_gray_255(image_a), to_gray_255(image_b)
            priors = {p.name: to_gray_255(run_prior(p.name, tensor_a, tensor_b, task)) for p in priors_for(task)}
            q = {name: float(qabf(image, gray_a, gray_b)) for name, image in priors.items()}
            sf = {name: float(spatial_frequency(image)) for name, image in priors.items()}
            print(f"  {task:9s} Nyquist {nyquist_ratio(fused, gray_a, gray_b):5.2f} band "
                  f"{border_band(fused, gray_a, gray_b):5.2f} | Qabf {float(qabf(fused, gray_a, gray_b)):.3f} "
                  f"average {q['average']:.3f} median {median(q):.3f} best {max(q.values()):.3f} | "
                  f"SF {float(spatial_frequency(fused)):.2f} average {sf['average']:.2f} median {median(sf):.2f} "
                  f"best {max(sf.values()):.2f}", flush=True)


if __name__ == "__main__":
    main()
