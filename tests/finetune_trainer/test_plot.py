"""The run's curves as a PNG (plot.py)."""

from __future__ import annotations

from finetune_contract.layout import PLOT_FILE
from finetune_trainer.plot import write_plot
from PIL import Image


def test_the_three_curves_are_drawn_into_one_png(tmp_path):
    summary = {"namespace": "team-a", "finetunejob": "chat",
               "lossCurve": [{"step": s, "loss": 3.0 / s} for s in range(1, 11)],
               "evalCurve": [{"step": 5, "loss": 0.9}, {"step": 10, "loss": 0.5}],
               "throughputCurve": [{"step": s, "tokensPerSecond": 900.0 + s} for s in
                                   range(2, 11)]}
    path = write_plot(summary, tmp_path)
    assert path == tmp_path / PLOT_FILE
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1200, 1050)
        # Something was drawn: the picture is not one flat colour.
        assert len(image.convert("L").getcolors(maxcolors=1 << 16)) > 10


def test_a_run_that_logged_no_step_gets_no_plot(tmp_path):
    assert write_plot({"lossCurve": []}, tmp_path) is None
    assert not (tmp_path / PLOT_FILE).exists()
