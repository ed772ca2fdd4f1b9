"""``mambaseg report``: one self-contained HTML page for a training run or an evaluation folder.

Everything is embedded: figures are base64 PNG data URIs, CSS and the table-sorting script are inline, nothing is
loaded from the network. Sections (each skipped when its inputs are missing): summary and paper comparison, the
per-case (2D) or per-case-and-class (3D) metrics table (click a header to sort), the per-case Dice distribution,
overlays of the best and worst cases (2D: image / ground truth / prediction / errors; 3D: three orthogonal slices
through every structure), learning curves from ``metrics.jsonl``, the configuration and provenance.

Numbers as a clinician-researcher reads them: the user's results first, the paper's table after; overlap scores
(Dice, IoU, precision, ...) in % with two decimals; every mean with its SD, median and a 95 % bootstrap confidence
interval over cases (:func:`summary_stats`); HD95 with its unit (mm in 3D, px in 2D); 3D volumes in mL; 3D slices
labelled axial / coronal / sagittal with orientation letters; the 2D overlays at full resolution one click away.

A run folder may contain ``test_eval/`` (an evaluation, ``summary.json``) and ``test_pred/`` (predictions); both
are used when present. Error colours follow :data:`mambaseg.data.io.OVERLAY_COLOURS`: true positive green, false
positive red, false negative blue. The inline script sets ``data-ready="1"`` on ``<body>`` once the tables are
sortable; a URL fragment ``#sort=<table id>:<column>[:desc]`` sorts a table on load.

One module per idea: :mod:`.data` gathers what the page shows, :mod:`.overlays` draws the best/worst-case figures,
:mod:`.html` holds the HTML building blocks (shared with the benchmark page) and :mod:`.page` renders and writes the
page.
"""

from __future__ import annotations

from .data import collect_report
from .html import Cell
from .page import PAPER_3D, PAPER_DRIVE, render_html, summary_stats, write_report

__all__ = ["PAPER_3D", "PAPER_DRIVE", "Cell", "collect_report", "render_html", "summary_stats", "write_report"]
