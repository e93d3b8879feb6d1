"""The synthetic NOCS- and HouseCat6D-format dataset generator (the project's embedded data world).

`generate` writes a dataset; `write_preview` renders a contact sheet of a few frames. Shape
families and their facing conventions are documented in `cleanpose.data.synth.shapes`.
"""

from cleanpose.data.synth.generate import SynthSummary, generate
from cleanpose.data.synth.preview import write_preview
from cleanpose.data.synth.sensor import SensorNoise

__all__ = ["SensorNoise", "SynthSummary", "generate", "write_preview"]
