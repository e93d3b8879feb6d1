"""Reading weight files and loading state dicts strictly: the one place both are done (timm ``_helpers.py``).

* :func:`load_file` reads a ``.pth``/``.pt`` file with ``torch.load(weights_only=True)`` onto the CPU (or a
  ``.safetensors`` file). A missing file or one the safe unpickler refuses raises
  :class:`~cleanpose.errors.CheckpointError` naming the file; there is never an unsafe retry.
* :func:`load_state_strict` checks a state dict against the keys and shapes a module (or a key table)
  expects, and raises one :class:`~cleanpose.errors.CheckpointError` that lists every missing and every
  extra key, or else every shape mismatch (the first 12), before anything is loaded.

Every loader of the package goes through these two: the network checkpoint (``models/checkpoint.py``), the
reference converter, the ULIP teacher files, the RGB backbone weights and the queue files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cleanpose.errors import CheckpointError

__all__ = ["describe_key_mismatch", "format_keys", "load_file", "load_state_strict", "unwrap_state_dict"]

_SHOWN = 12
"""Keys or shape mismatches listed in one error message (the rest are counted)."""


def load_file(path: str | Path, what: str, *, hint: str = "", allowed_globals: Iterable[type] = ()) -> Any:
    """Read a weights file safely onto the CPU.

    Args:
        path: a ``torch.save`` file (read with ``weights_only=True``) or a ``.safetensors`` file.
        what: what the file is, for the messages (``"checkpoint"``, ``"ULIP checkpoint"``, ...).
        hint: appended to both messages after ``"; "`` (how to get a readable file).
        allowed_globals: classes the safe unpickler may rebuild besides tensors and containers
            (``torch.serialization.safe_globals``; e.g. ``argparse.Namespace`` in the ULIP files).

    Returns:
        The loaded object (tensors on the CPU).

    Raises:
        CheckpointError: ``"{path}: {what} not found"``, or ``"{path}: cannot be read with weights_only=True
            ({error})"`` for a corrupt file or one holding other objects.
    """
    path = Path(path)
    suffix = f"; {hint}" if hint else ""
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found{suffix}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file as load_safetensors

            return load_safetensors(str(path), device="cpu")
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise several types for refused or corrupt files
        raise CheckpointError(f"{path}: cannot be read with weights_only=True ({error}){suffix}") from error


def unwrap_state_dict(checkpoint: Any, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded file: bare, or under ``state_dict`` or ``model``; ``module.`` stripped.

    Args:
        checkpoint: what :func:`load_file` returned.
        source: the file, for the message.

    Returns:
        ``{key: tensor}`` with the DistributedDataParallel prefix ``module.`` removed from every key.

    Raises:
        CheckpointError: no non-empty mapping of tensors there.
    """
    if isinstance(checkpoint, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(checkpoint.get(wrapper), Mapping):
                checkpoint = checkpoint[wrapper]
                break
    if not isinstance(checkpoint, Mapping):
        found = type(checkpoint).__name__
    elif not checkpoint:
        found = "an empty mapping"
    elif not all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        found = "a mapping with non-tensor entries"
    else:
        return {key.removeprefix("module."): value for key, value in checkpoint.items()}
    raise CheckpointError(
        f"{source}: expected a state dict of tensors; got {found} (a bare state dict, or one under 'state_dict' "
        "or 'model')"
    )


def format_keys(keys: Sequence[str], limit: int = _SHOWN) -> str:
    """Sorted, comma-separated keys for error messages, cut after ``limit`` with a count of the rest."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def describe_key_mismatch(missing: Sequence[str], extra: Sequence[str], extra_word: str = "unexpected") -> str:
    """``"missing keys: …; <extra_word> keys: …"`` for the non-empty lists ("" when both are empty)."""
    parts = [f"missing keys: {format_keys(missing)}"] if missing else []
    if extra:
        parts.append(f"{extra_word} keys: {format_keys(extra)}")
    return "; ".join(parts)


def load_state_strict(
    state: Mapping[str, torch.Tensor],
    expected: nn.Module | Mapping[str, torch.Tensor | torch.Size],
    source: str,
    *,
    what: str = "state dict",
    target: str = "the network",
    shapes: str = "checkpoint vs network",
    extra_word: str = "unexpected",
    display: Callable[[str], str] | None = None,
) -> None:
    """Check ``state`` against the expected keys and shapes, then load it when ``expected`` is a module.

    Args:
        state: the state dict read from a file.
        expected: the module to load into (its ``state_dict()`` gives the expected keys and shapes), or a
            mapping ``key -> tensor or shape`` to check against without loading.
        source: where ``state`` comes from (the file), the start of every message.
        what, target: the key message reads ``"{source}: {what} does not match {target}; missing keys: …;
            {extra_word} keys: …"``.
        shapes: the shape message reads ``"{source}: shape mismatch ({shapes}): key (found) vs (expected); …"``.
        extra_word: the word for keys of ``state`` that are not expected.
        display: how a key is written in the key message (for example in the file's own naming);
            default as is.

    Raises:
        CheckpointError: missing or extra keys (all listed, up to 12 of each), else shape mismatches.
    """
    reference = expected.state_dict() if isinstance(expected, nn.Module) else expected
    missing = sorted(set(reference) - set(state))
    extra = sorted(set(state) - set(reference))
    if missing or extra:
        show = display or (lambda key: key)
        listing = describe_key_mismatch([show(key) for key in missing], [show(key) for key in extra], extra_word)
        raise CheckpointError(f"{source}: {what} does not match {target}; {listing}")
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs {tuple(_shape(value))}"
        for key, value in reference.items()
        if tuple(state[key].shape) != tuple(_shape(value))
    ]
    if mismatched:
        raise CheckpointError(f"{source}: shape mismatch ({shapes}): {'; '.join(mismatched[:_SHOWN])}")
    if isinstance(expected, nn.Module):
        expected.load_state_dict(state, strict=True)


def _shape(value: torch.Tensor | torch.Size) -> torch.Size:
    return value.shape if isinstance(value, torch.Tensor) else value
