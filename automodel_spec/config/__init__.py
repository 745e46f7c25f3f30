"""The typed configuration, its rules, and what SGLang accepts for it (flags per release, adaptive config)."""
