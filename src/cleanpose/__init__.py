"""cleanpose: category-level 6D object pose and size estimation from RGB-D (CleanPose, ICCV 2025).

``from cleanpose import Predictor`` gives poses for one's own RGB-D frames
(`cleanpose.engine.predict`); it is imported on first use, so ``import cleanpose`` stays light.
"""

__version__ = "0.1.0"

__all__ = ["Predictor", "__version__"]


def __getattr__(name: str):
    if name == "Predictor":
        from cleanpose.engine.predict import Predictor

        return Predictor
    raise AttributeError(f"module 'cleanpose' has no attribute {name!r}")
