"""Copy a training run's pipeline into the package as the bundled default model (fusionfm/default_model/).

    python scripts/reproduce/bundle_model.py RUN_DIR

Loads the run's pipeline and saves it again (model_index.json and image_processor/ then carry every current setting:
caps, tile size, border margin), with the run's continual.csv and training_summary.json. The weights are checked
against the fingerprint the training script recorded in training_summary.json: what ships is exactly what training
produced, nothing edited afterwards. Written to a staging folder and swapped in whole.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from fusionfm import FusionFMPipeline
from fusionfm.atomic import save_pretrained_portable, staged_folder
from fusionfm.hub import BUNDLED_MODEL_DIR
from fusionfm.training.checkpoints import weights_fingerprint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    args = parser.parse_args()
    recorded = json.loads((args.run / "training_summary.json").read_text())["weights_sha256_per_process"]
    # fp32 at load: the weights stay in their saved (contiguous) layout; the shipped default stays "auto".
    pipeline = FusionFMPipeline.from_pretrained(args.run, default_compute_dtype="fp32")
    pipeline.register_to_config(default_compute_dtype="auto")
    if weights_fingerprint(pipeline.unet) not in recorded:
        print(f"error: the weights in {args.run} are not the ones its training run recorded", file=sys.stderr)
        return 1
    with staged_folder(BUNDLED_MODEL_DIR) as staging:
        save_pretrained_portable(pipeline, staging)
        for name in ("continual.csv", "training_summary.json"):
            if (args.run / name).is_file():
                shutil.copy(args.run / name, staging / name)
    size = sum(path.stat().st_size for path in BUNDLED_MODEL_DIR.rglob("*") if path.is_file())
    print(f"{BUNDLED_MODEL_DIR}: {size / 1e6:.1f} MB from {args.run}, weights {recorded[0][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
