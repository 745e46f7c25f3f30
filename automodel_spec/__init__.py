"""automodel-spec: serve and benchmark trained EAGLE / EAGLE-3 drafters with SGLang."""

__version__ = "0.1.0"

# First, before any module of the package (or Hydra, OmegaConf, torch, which the recipes import only
# through it): a recipe run holds SIGINT / SIGTERM until its handlers are in place (signals.py says why).
from automodel_spec.io.signals import hold_signals_while_a_recipe_starts  # noqa: E402

hold_signals_while_a_recipe_starts()
