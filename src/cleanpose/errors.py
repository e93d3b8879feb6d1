"""Exception families of cleanpose.

Each failure family has one class that subclasses the matching built-in, so callers can catch either.
Messages name the file, key or value that is wrong and say what was expected.
"""


class CleanposeError(Exception):
    """Base of every error cleanpose raises on purpose (the CLI prints these as one line)."""


class DataFormatError(CleanposeError, ValueError):
    """A file or in-memory record does not have the expected keys, shapes, dtypes or values."""


class ConfigError(CleanposeError, ValueError):
    """A config file, an override or a setting passed to a library function has an unknown key or name, a
    wrong type or an out-of-range value."""


class CheckpointError(CleanposeError, RuntimeError):
    """A checkpoint is missing, unreadable, of another version, or has missing/unexpected keys."""


class BackendUnavailableError(CleanposeError, RuntimeError):
    """A requested fast path (CUDA kernel, embree ray caster, pretrained weights) is not available."""


class OutputError(CleanposeError, OSError):
    """An output file or folder cannot be written: not writable, not a folder, too little free space, or it
    holds files that cleanpose refuses to replace."""


class UsageError(CleanposeError, ValueError):
    """A command-line argument or argument combination is invalid (raised by ``cli.py`` only; library
    functions raise the classes above)."""
