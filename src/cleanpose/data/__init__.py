"""Dataset readers, the synthetic generator and the sample pipeline."""
