"""`cleanpose data prepare`: the NOCS downloads → the layout after SPD/DPDN preprocessing.

`prepare` runs the whole conversion; `annotate_frame` / `annotate_test_frame` label one raw training /
test frame; `ransac_similarity` is the RANSAC + Umeyama alignment; `cleanpose.data.prepare.models`
builds the SPD point models.
"""

from cleanpose.data.prepare.align import AlignmentError, Similarity, ransac_similarity, umeyama
from cleanpose.data.prepare.annotate import Annotation, annotate_frame, annotate_test_frame
from cleanpose.data.prepare.pipeline import PrepareSummary, prepare, stream_seed

__all__ = [
    "AlignmentError",
    "Annotation",
    "PrepareSummary",
    "Similarity",
    "annotate_frame",
    "annotate_test_frame",
    "prepare",
    "ransac_similarity",
    "stream_seed",
    "umeyama",
]
