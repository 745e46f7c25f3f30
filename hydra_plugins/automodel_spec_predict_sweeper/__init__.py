"""Hydra sweeper ``predict`` of automodel-spec: measure a few points, predict the grid, confirm the best.

Select it with ``+sweep=predict`` (``conf/sweep/predict.yaml``). The logic lives in the Hydra-free
``automodel_spec.predict.driver``; this package only adapts it to Hydra's sweeper interface (Hydra loads
sweepers from the ``hydra_plugins`` namespace only).
"""
