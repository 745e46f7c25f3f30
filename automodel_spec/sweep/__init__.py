"""Sweep results: rows from each point's metrics.json (``rows``), tables (``summary``), plots (``plots``)."""
