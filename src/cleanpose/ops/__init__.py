"""Point operators (furthest point sampling, ball query, grouping, interpolation, kNN)."""
