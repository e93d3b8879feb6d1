"""The official NOCS / HouseCat6D pose metrics."""
