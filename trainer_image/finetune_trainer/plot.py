"""The run's curves in one picture: training loss, evaluation loss and tokens/s by optimizer
step, written next to the final model (rank 0), so that a run can be judged at a glance
without a tracking server. matplotlib's Agg backend: no display needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_contract.layout import PLOT_FILE

# Inches, and dots per inch: 1200 x 1050 pixels, three panels.
SIZE, DPI = (8, 7), 150


def write_plot(summary: dict[str, Any], output_dir: Path) -> Path | None:
    """The PNG of the summary's curves under `output_dir`; None when it holds no step."""
    curves = [("training loss", summary.get("lossCurve") or [], "loss"),
              ("evaluation loss", summary.get("evalCurve") or [], "loss"),
              ("tokens/s", summary.get("throughputCurve") or [], "tokensPerSecond")]
    if not curves[0][1]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, panels = pyplot.subplots(len(curves), 1, sharex=True, figsize=SIZE)
    for panel, (title, points, key) in zip(panels, curves, strict=True):
        panel.plot([p["step"] for p in points], [p[key] for p in points],
                   marker="o" if len(points) < 30 else None, markersize=3)
        panel.set_ylabel(title)
        panel.grid(alpha=0.3)
    panels[-1].set_xlabel("optimizer step")
    figure.suptitle(f"{summary.get('namespace', '')}/{summary.get('finetunejob', '')}".strip("/"))
    figure.tight_layout()
    path = output_dir / PLOT_FILE
    figure.savefig(path, dpi=DPI)
    pyplot.close(figure)
    return path
