"""The CleanPose network, one module per concept of the paper."""
