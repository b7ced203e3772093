"""fusionfm.training.logs and model_card: the CSV log on resume, R with ACC/BWT, the rendered model card."""

from __future__ import annotations

import csv

import yaml

from fusionfm.training.logs import CsvLog, quality_markdown, write_quality_csv
from fusionfm.training.model_card import render_model_card, write_model_card

QUALITY = [[1.2, 0.8], [1.0, 1.1]]


def test_csv_log_drops_rows_after_the_resumed_step(tmp_path):
    path = tmp_path / "logs" / "train_log.csv"
    log = CsvLog(path, resume_step=0)
    for step in range(1, 6):
        log.write({"step": step, "task": "IVF", "loss": 0.1, "flow_loss": 0.1, "ewc_penalty": 0, "lr": 1e-3,
                   "replayed": 0})
    CsvLog(path, resume_step=3)
    with path.open(newline="") as handle:
        assert [row["step"] for row in csv.DictReader(handle)] == ["1", "2", "3"]


def test_quality_csv_and_markdown_carry_acc_and_bwt(tmp_path):
    accuracy, backward = write_quality_csv(tmp_path / "continual.csv", QUALITY, ["IVF", "MIF"], ["IVF", "MIF"])
    assert accuracy == (1.0 + 1.1) / 2 and abs(backward - (1.0 - 1.2)) < 1e-12
    rows = list(csv.reader((tmp_path / "continual.csv").open()))
    assert rows[0] == ["after", "IVF", "MIF"] and rows[1] == ["IVF", "1.2000", "0.8000"]
    assert rows[-2] == ["ACC", "1.0500"] and rows[-1] == ["BWT", "-0.2000"]
    joint_accuracy, joint_backward = write_quality_csv(tmp_path / "joint.csv", [[1.0, 0.9]], ["joint"], ["IVF", "MIF"])
    assert joint_accuracy == 0.95 and joint_backward is None
    assert "ACC = 1.050, BWT = -0.200." in quality_markdown(QUALITY, ["IVF", "MIF"], ["IVF", "MIF"])
    assert quality_markdown([], [], ["IVF"]).startswith("Not evaluated")


def test_model_card_has_hub_metadata_recipe_and_results(tmp_path):
    settings = {"tasks": ["IVF", "MIF"], "joint": False, "train_batch_size": 8, "eval_pairs": 8,
                "eval_resolution": 256, "learning_rate": 0.001, "ewc_lambda": 2000, "hub_token": "secret"}
    card = render_model_card(settings, 2000, QUALITY, ["IVF", "MIF"], "user/fusionfm")
    path = write_model_card(tmp_path, card)
    text = path.read_text()
    metadata = yaml.safe_load(text.split("---")[1])
    assert metadata["library_name"] == "diffusers" and "image-fusion" in metadata["tags"]
    assert card.data.pipeline_tag == "image-to-image"
    assert "trained in sequence (IVF → MIF)" in text and "2000 steps of batch 8" in text
    assert 'FusionFMPipeline.from_pretrained("user/fusionfm")' in text
    assert "| `learning_rate` | `0.001` |" in text and "| `ewc_lambda` | `2000` |" in text
    assert "| MIF | 1.000 | 1.100 |" in text and "ACC = 1.050" in text
    assert "secret" not in text and "hub_token" not in text
