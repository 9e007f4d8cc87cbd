"""yotocodec."""
