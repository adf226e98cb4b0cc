"""The report's figures are drawn on a `matplotlib.figure.Figure` with the Agg canvas, never through pyplot, so
making a report changes no global matplotlib state (backend, open figures) and is safe inside Ray workers.
matplotlib is imported only when a figure is drawn: importing the report costs nothing without one.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(**kwargs) -> Figure:
    """A Figure(**kwargs) on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure, **kwargs) -> bytes:
    """The figure saved as PNG (savefig keyword arguments as given)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **kwargs)
    return buffer.getvalue()
