"""Training, testing and prediction loops."""
