"""Predict a speculative grid from a few measured servers (see docs/prediction.md)."""
