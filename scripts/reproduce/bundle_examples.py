"""Copy the app's example pairs from shared/data into examples/ and list their sources in examples/README.md.

    python scripts/reproduce/bundle_examples.py [--data ../shared/data]

Files are byte-identical copies; the README gives each pair's dataset, source repository, commit, path and
licence as shared/data/manifest.csv and shared/data/README.md state them.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# (app task, manifest task, dataset, stem)
EXAMPLES = [
    ("IVF", "IVF", "RoadScene", "FLIR_08021"),
    ("IVF", "IVF", "TNO", "07"),
    ("MIF-CT", "MIF", "Harvard_MRI_CT", "31"),
    ("MIF-CT", "MIF", "Harvard_MRI_CT", "20"),
    ("MIF-PET", "MIF", "Harvard_MRI_PET", "52"),
    ("MIF-PET", "MIF", "Harvard_MRI_PET", "31"),
    ("MIF-SPECT", "MIF", "Harvard_MRI_SPECT", "70"),
    ("MIF-SPECT", "MIF", "Harvard_MRI_SPECT", "69"),
    ("MEF", "MEF", "MEFB", "WindowTrim"),
    ("MEF", "MEF", "MEFB", "ICCV_11"),
    ("MFF", "MFF", "MFIFB", "lytro_01"),
    ("MFF", "MFF", "MFIFB", "savic_10"),
]
LICENCES = {
    "RoadScene": "none stated; derived from the FLIR ADAS dataset. Cite H. Xu et al., FusionDN, AAAI 2020.",
    "TNO": "none stated for the images (CDDFuse test set). Cite A. Toet, The TNO multiband image data collection, "
           "Data in Brief 15 (2017).",
    "Harvard_MRI_CT": "none stated; Harvard Whole Brain Atlas (K. A. Johnson, J. A. Becker). CDDFuse test split.",
    "Harvard_MRI_PET": "none stated; Harvard Whole Brain Atlas (K. A. Johnson, J. A. Becker). CDDFuse test split.",
    "Harvard_MRI_SPECT": "none stated; Harvard Whole Brain Atlas (K. A. Johnson, J. A. Becker). CDDFuse test split.",
    "MEFB": "none stated. Cite X. Zhang, Benchmarking and comparing multi-exposure image fusion algorithms, "
            "Information Fusion 2021.",
    "MFIFB": "none stated. Cite X. Zhang, Multi-focus Image Fusion: A Benchmark, arXiv:2005.01116 (2020).",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    with (args.data / "manifest.csv").open(newline="") as handle:
        manifest = {(row["task"], row["dataset"], row["stem"]): row for row in csv.DictReader(handle)}
    out = REPO_ROOT / "examples"
    lines = [
        "# Example pairs for the app",
        "",
        "Byte-identical copies of a few public test pairs from `shared/data` (made by",
        "`python scripts/reproduce/bundle_examples.py`). File names: `<task>/<dataset>_<stem>_<modality>.<ext>`.",
        "The images belong to their authors; licences are quoted as the source repositories state them.",
        "",
        "| task | files | dataset | source repository @ commit | source paths | licence / citation |",
        "|---|---|---|---|---|---|",
    ]
    for app_task, task, dataset, stem in EXAMPLES:
        row = manifest[(task, dataset, stem)]
        names = []
        for side in ("a", "b"):
            source = args.data / row[f"path_{side}"]
            name = f"{dataset}_{stem}_{row[f'modality_{side}']}{source.suffix}"
            (out / app_task).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, out / app_task / name)
            names.append(f"`{app_task}/{name}`")
        lines.append(
            f"| {app_task} | {'<br>'.join(names)} | {dataset} | `{row['source_repo']}` @ `{row['source_commit'][:12]}` "
            f"| `{row['source_path_a']}`<br>`{row['source_path_b']}` | {LICENCES[dataset]} |"
        )
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print(f"{len(EXAMPLES)} pairs in {out}")


if __name__ == "__main__":
    main()
