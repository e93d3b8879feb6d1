"""The CleanPose network, one module per concept of the paper.

``build_model`` and ``load_checkpoint`` are the entry points (docs/model.md §16b)::

    from cleanpose.models import load_checkpoint
    model = load_checkpoint("ours.pth")          # CPU, eval mode, queue loaded
    out = model(batch, queue_idx=queue_idx)      # dict of reference output keys
"""

from cleanpose.models.checkpoint import load_checkpoint, save_checkpoint
from cleanpose.models.net import CleanPoseNet, build_model

__all__ = ["CleanPoseNet", "build_model", "load_checkpoint", "save_checkpoint"]
