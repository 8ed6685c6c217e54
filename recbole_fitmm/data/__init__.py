"""Dataset hook, converter and synthetic data."""
