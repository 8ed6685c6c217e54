"""Plugin models (one file each) and their shared building blocks."""
