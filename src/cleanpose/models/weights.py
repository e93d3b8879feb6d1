"""Pretrained weight files (DINOv2, ULIP): where cleanpose looks for them and how it fetches them.

`resolve_weights` returns the file to load: the configured path when it exists, else the file of the
same name (or the official name) in the torch hub cache (``torch.hub.get_dir()/checkpoints``, where
``torch.hub`` itself keeps downloads), else, for files with an official direct URL (DINOv2), a fresh
download into that cache with a progress bar. Offline, or for files without a direct URL (ULIP, whose
files sit behind a Hugging Face / Google Drive page), the error says which file to put where.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from cleanpose.errors import BackendUnavailableError, CheckpointError

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 30.0
"""Seconds to wait for the server before calling the machine offline."""


@dataclass(frozen=True)
class WeightsFile:
    """A pretrained weights file.

    Attributes:
        what: its name in messages.
        filename: the official file name (also its name in the hub cache).
        url: official direct download URL, or None (then only `page` says where to get it).
        page: where to download it by hand.
    """

    what: str
    filename: str
    url: str | None
    page: str


DINOV2_VITS14 = WeightsFile(
    "DINOv2 ViT-S/14 weights", "dinov2_vits14_pretrain.pth",
    "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
    "https://github.com/facebookresearch/dinov2",
)  # fmt: skip
ULIP2_POINTBERT = WeightsFile(
    "ULIP checkpoint", "pretrained_models_ckpt_zero-sho_classification_pointbert_ULIP-2.pt", None,
    "https://huggingface.co/datasets/SFXX/ulip (ULIP-2 PointBERT zero-shot classification checkpoint)",
)  # fmt: skip
ULIP_POINTNET2_SSG = WeightsFile(
    "ULIP checkpoint", "pretrained_models_ckpt_zero-sho_classification_checkpoint_pointnet2_ssg.pt", None,
    "https://huggingface.co/datasets/SFXX/ulip (ULIP PointNet2-SSG zero-shot classification checkpoint)",
)  # fmt: skip
ULIP_TEACHERS = {"pointbert": ULIP2_POINTBERT, "pointnet2_ssg": ULIP_POINTNET2_SSG}
"""The ULIP file of each distillation teacher."""


def hub_checkpoint_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``, usually ``~/.cache/torch/...``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(spec: WeightsFile, path: str | os.PathLike | None = None, *, progress: bool = True) -> Path:
    """The weights file to load (see the module docstring for the search order).

    Args:
        spec: which file.
        path: the configured file, or None.
        progress: show a progress bar while downloading.

    Raises:
        CheckpointError: `path` is given, missing, and no copy is cached or downloadable.
        BackendUnavailableError: no `path`, no cached copy, and no download possible (offline or no URL).
    """
    if path is not None and Path(path).expanduser().is_file():
        return Path(path).expanduser()
    cache = hub_checkpoint_dir()
    names = dict.fromkeys([Path(path).name, spec.filename] if path is not None else [spec.filename])
    for name in names:
        if (cache / name).is_file():
            logger.info("%s: using %s from the torch hub cache", spec.what, cache / name)
            return cache / name
    where = f"put {spec.filename} into {cache}" + (f" or at {path}" if path is not None else "")
    problem = None
    if spec.url is not None:
        try:
            return download(spec.url, cache / spec.filename, progress=progress)
        except OSError as error:  # URLError, timeouts and refused connections are OSErrors
            problem = f"download from {spec.url} failed ({getattr(error, 'reason', error)}); "
    source = spec.url if spec.url is not None else spec.page
    message = f"{spec.what} not found; {problem or ''}{where} (download it from {source})"
    if path is not None:
        raise CheckpointError(f"{path}: {message}")
    raise BackendUnavailableError(message)


def download(url: str, target: Path, *, progress: bool = True) -> Path:
    """Download `url` to `target` (via ``target.partial``, renamed when complete), with a progress bar.

    Raises:
        OSError: the server cannot be reached (offline), answers with an error, or the file cannot be written.
    """
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    logger.info("downloading %s to %s", url, target)
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with open(partial, "wb") as handle, tqdm(total=total, unit="B", unit_scale=True, desc=target.name,
                                                 disable=not progress) as bar:  # fmt: skip
            while chunk := response.read(1 << 20):
                handle.write(chunk)
                bar.update(len(chunk))
    os.replace(partial, target)
    return target
