"""Everything that imports Hydra or OmegaConf: the recipes' runtime, config registration, callbacks."""
