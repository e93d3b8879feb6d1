"""cleanpose: category-level 6D object pose and size estimation from RGB-D (CleanPose, ICCV 2025)."""

__version__ = "0.1.0"
