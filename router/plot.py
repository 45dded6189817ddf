"""The quality/cost curve as a PNG: router, baselines and oracle on the same axes.

One picture answers the operator's question "what does X % of teacher calls buy me?" and
shows at a glance whether the router beats random routing and how far it is from hindsight.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from router.metrics import quality_cost_curve  # noqa: E402


def plot_quality_cost(
    curves: Mapping[str, np.ndarray],
    cheap_correct: np.ndarray,
    strong_correct: np.ndarray,
    path: Path | str,
    title: str = "Router quality/cost curve",
    threshold_share: float | None = None,
) -> Path:
    """Plot accuracy vs. share of strong-model calls for every named score vector."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=120)
    styles = {"random": ("grey", "--"), "oracle": ("black", ":"), "subject prior": ("tab:orange", "-.")}
    for name, scores in curves.items():
        c = quality_cost_curve(scores, cheap_correct, strong_correct)
        color, ls = styles.get(name, (None, "-"))
        ax.plot(c.strong_share * 100, c.quality * 100, label=name, color=color, linestyle=ls, linewidth=1.6)
    ax.axhline(np.mean(cheap_correct) * 100, color="tab:red", linewidth=0.8, alpha=0.6, label="cheap only")
    ax.axhline(np.mean(strong_correct) * 100, color="tab:green", linewidth=0.8, alpha=0.6, label="strong only")
    if threshold_share is not None:
        ax.axvline(threshold_share * 100, color="tab:blue", linewidth=0.8, alpha=0.5, linestyle="--",
                   label=f"shipped threshold ({threshold_share:.0%})")
    ax.set_xlabel("calls routed to the strong model (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
