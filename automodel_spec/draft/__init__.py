"""Where a draft's files are and reading them, once: the resolver, the producers' checkpoints, weights."""
