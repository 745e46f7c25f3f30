"""automodel-spec: serve and benchmark trained EAGLE / EAGLE-3 drafters with SGLang."""

__version__ = "0.1.0"
