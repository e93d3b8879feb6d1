"""Typed configuration: frozen dataclasses, a generic loader with strict checks, overrides and saving.

Every config is a tree of frozen dataclasses. :func:`load_config` turns a YAML file or a mapping into
such a tree and checks it on the way:

* a key that is not a field is an error that names the dotted key and lists the valid keys at that level,
* every value gets a type check (``int`` refuses ``bool`` and ``2.5``; ``float`` accepts ints; sequences
  become tuples), a range check (``metadata={"min": ..., "max": ...}``) and a choice check
  (``metadata={"choices": (...)}``),
* top-level configs carry a ``version``; a file of an older version is upgraded on reading (its renamed
  keys are renamed, :data:`CONFIG_UPGRADES`, as in detectron2's ``config/compat.py``), a newer one is
  refused with the versions this build reads.

``--set section.key=value`` overrides (:func:`apply_overrides`) are parsed with YAML rules and go through
the same checks. :func:`save_config` writes a tree back as YAML that :func:`load_config` reads unchanged.

:class:`ModelConfig` holds the network's settings; its sections are what each module's ``from_config``
receives. :meth:`ModelConfig.from_reference_yaml` reads the reference's ``pose_net`` section
(chrislin0621/CleanPose ``config/REAL/camera_real.yaml``, ``config/HouseCat6D/housecat6d.yaml``), whose
short key names (``IAKD``, ``GAFA``, ``cat_num``) appear only in the key table of that method.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from cleanpose.errors import ConfigError
from cleanpose.fileio import atomic_writer

CONFIG_VERSION = 2
"""The config version this build writes; it reads every version from 1 up to this one."""

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------------
# Model configuration
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionConfig:
    """A stack of pre-norm attention blocks (the reference's ``AttnLayer`` / ``SelfAttnLayer`` sections)."""

    num_blocks: int = field(default=4, metadata={"min": 1})
    """Number of blocks (reference ``block_num``)."""
    model_dim: int = field(default=256, metadata={"min": 1})
    """Token width (reference ``d_model``)."""
    num_heads: int = field(default=4, metadata={"min": 1})
    """Attention heads (reference ``num_head``); must divide ``model_dim``."""
    ffn_dim: int = field(default=256, metadata={"min": 1})
    """Hidden width of the feed-forward layer (reference ``dim_ffn``)."""
    dropout: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0, "max_exclusive": True})
    """Dropout after the feed-forward activation; 0 in the reference (not in its YAML)."""

    def __post_init__(self) -> None:
        if self.model_dim % self.num_heads != 0:
            raise ConfigError(f"model_dim {self.model_dim} is not divisible by num_heads {self.num_heads}")


@dataclass(frozen=True)
class PointEncoderConfig:
    """PointNet++ MSG point encoder (docs/model.md §3); the reference hard-codes these sizes."""

    num_centers: tuple[int, ...] = field(default=(512, 256, 128, 64), metadata={"min": 1})
    """FPS centres per set-abstraction level."""
    radii: tuple[tuple[float, ...], ...] = field(
        default=((0.01, 0.02), (0.02, 0.04), (0.04, 0.08), (0.08, 0.16)), metadata={"min": 0.0}
    )
    """Ball-query radii per level and scale, metres."""
    num_neighbors: tuple[tuple[int, ...], ...] = field(
        default=((16, 32), (16, 32), (16, 32), (16, 32)), metadata={"min": 1}
    )
    """Ball-query neighbours per level and scale (reference ``nsample``)."""
    sa_channels: tuple[tuple[int, ...], ...] = field(
        default=((16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128, 256)), metadata={"min": 1}
    )
    """Shared-MLP widths of each scale per level (input width +3 xyz is implied)."""
    fp_channels: tuple[tuple[int, ...], ...] = field(
        default=((128, 128), (256, 256), (256, 256), (512, 512)), metadata={"min": 1}
    )
    """Shared-MLP widths of feature-propagation module i (i = 0 writes the input points)."""

    def __post_init__(self) -> None:
        levels = len(self.num_centers)
        for name in ("radii", "num_neighbors", "sa_channels", "fp_channels"):
            if len(getattr(self, name)) != levels:
                raise ConfigError(f"{name} has {len(getattr(self, name))} levels; num_centers has {levels}")
        for level, (radii, neighbors) in enumerate(zip(self.radii, self.num_neighbors)):
            if len(radii) != len(neighbors):
                raise ConfigError(f"level {level} has {len(radii)} radii but {len(neighbors)} num_neighbors")

    @property
    def out_dim(self) -> int:
        """Channels of the per-point output features."""
        return self.fp_channels[0][-1]


@dataclass(frozen=True)
class KeypointDetectorConfig:
    """Instance-adaptive keypoint detector (docs/model.md §5; reference ``IAKD``)."""

    num_keypoints: int = field(default=96, metadata={"min": 1})
    """Keypoints K (reference ``kpt_num``)."""
    query_dim: int = field(default=256, metadata={"min": 1})
    """Width of the learned keypoint queries (reference ``query_dim``)."""
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    """Cross/self attention stack refining the queries (reference ``AttnLayer``)."""


@dataclass(frozen=True)
class FeatureAggregatorConfig:
    """Geometric-aware feature aggregator (docs/model.md §6; reference ``GAFA``)."""

    num_blocks: int = field(default=2, metadata={"min": 1})
    """Blocks (reference ``block_num``)."""
    num_neighbors: tuple[int, ...] = field(default=(16, 32), metadata={"min": 1})
    """k nearest points per block (reference ``K``); one entry per block."""
    model_dim: int = field(default=256, metadata={"min": 1})
    """Feature width (reference ``d_model``)."""

    def __post_init__(self) -> None:
        if len(self.num_neighbors) != self.num_blocks:
            raise ConfigError(f"num_neighbors has {len(self.num_neighbors)} entries; num_blocks is {self.num_blocks}")


@dataclass(frozen=True)
class FrontDoorConfig:
    """Front-door causal encoder and its confounder queue (docs/model.md §7; reference ``FDEncoder``)."""

    model_dim: int = field(default=256, metadata={"min": 1})
    """Keypoint and queue feature width (reference ``feat_dim``)."""
    cross_attention: AttentionConfig = field(default_factory=AttentionConfig)
    """Keypoint-to-queue attention stack (reference ``AttnLayer``)."""
    self_attention: AttentionConfig = field(default_factory=lambda: AttentionConfig(num_blocks=2))
    """Keypoint self-attention stack (reference ``SelfAttnLayer``)."""
    num_queue_samples: int = field(default=12, metadata={"min": 1})
    """Queue entries drawn per category and forward (reference ``pose_net.select_num``)."""
    queue_length: int = field(default=80, metadata={"min": 1})
    """Entries per category in the queue Q (80 NOCS, 100 HouseCat6D; not a reference config key)."""

    def __post_init__(self) -> None:
        if self.num_queue_samples > self.queue_length:
            raise ConfigError(
                f"num_queue_samples {self.num_queue_samples} exceeds queue_length "
                f"{self.queue_length} (draws are without replacement)"
            )


@dataclass(frozen=True)
class NocsPredictorConfig:
    """Per-category NOCS bin classifier (docs/model.md §8; reference ``NOCS_Predictor``)."""

    num_categories: int = field(default=6, metadata={"min": 1})
    """Categories C (reference ``cat_num``); equals ``ModelConfig.num_categories``."""
    num_bins: int = field(default=64, metadata={"min": 1})
    """Bins per NOCS axis (reference ``bins_num``)."""
    attention: AttentionConfig = field(default_factory=lambda: AttentionConfig(num_blocks=2))
    """Self-attention stack (reference ``AttnLayer``, a ``SelfAttnLayer``)."""


@dataclass(frozen=True)
class ReconstructorConfig:
    """Shape reconstructor (docs/model.md §9; reference ``Reconstructor``)."""

    points_per_keypoint: int = field(default=10, metadata={"min": 1})
    """Reconstructed points per keypoint (reference ``pts_per_kpt``)."""
    model_dim: int = field(default=256, metadata={"min": 1})
    """Keypoint feature width (reference ``ndim``)."""


@dataclass(frozen=True)
class DistillationConfig:
    """Residual knowledge distillation from a frozen 3-D teacher (docs/model.md §11)."""

    feature_dim: int = field(default=768, metadata={"min": 1})
    """Teacher feature width (reference ``distillation_feat_dim``): 768 PointBERT, 256 PointNet2-SSG."""
    residual_weight: float = field(default=0.1, metadata={"min": 0.0})
    """Weight of the projector's residual (0.1 hard-coded in the reference)."""
    teacher: Literal["pointbert", "pointnet2_ssg", "none"] = field(
        default="pointbert", metadata={"choices": ("pointbert", "pointnet2_ssg", "none")}
    )
    """Which frozen teacher produces the target features."""
    teacher_mode: Literal["train", "eval"] = field(default="train", metadata={"choices": ("train", "eval")})
    """``train`` reproduces the reference (DropPath on, batch-statistics BN); ``eval`` is deterministic."""
    teacher_checkpoint: str | None = None
    """Official ULIP checkpoint file of the teacher; None builds the teacher without weights."""


@dataclass(frozen=True)
class RgbBackboneConfig:
    """Size and training switches of the RGB backbone; the defaults are the reference's."""

    frozen: bool = True
    """``dino``: freeze the ViT (the reference). Set False to train a ViT without pretrained weights."""
    random_init: bool = False
    """``dino``: start the ViT from random weights when ``rgb_weights`` is not set (else that is an error)."""
    embed_dim: int = field(default=384, metadata={"min": 1})
    """``dino``: token width (384 for ViT-S/14)."""
    depth: int = field(default=12, metadata={"min": 1})
    """``dino``: transformer blocks."""
    num_heads: int = field(default=6, metadata={"min": 1})
    """``dino``: attention heads."""
    psp_channels: int = field(default=1024, metadata={"min": 1})
    """``resnet``: width after the pyramid pooling (1024 in the reference)."""
    out_channels: int = field(default=128, metadata={"min": 1})
    """Per-point RGB feature width (128); with the point encoder's it makes the keypoint feature width."""


@dataclass(frozen=True)
class ModelConfig:
    """The CleanPose network (docs/model.md); the reference's ``pose_net`` section."""

    version: int = CONFIG_VERSION
    """Config format version."""
    rgb_backbone: Literal["dino", "resnet"] = field(default="dino", metadata={"choices": ("dino", "resnet")})
    """RGB feature extractor: frozen DINOv2 ViT-S/14 or trainable PSP-ResNet18."""
    num_categories: int = field(default=6, metadata={"min": 1})
    """Categories C (reference ``cat_num``)."""
    rgb_weights: str | None = None
    """Pretrained RGB backbone file (DINOv2 ``dinov2_vits14_pretrain.pth``, or torchvision ImageNet
    ``resnet18`` for ``resnet``); None starts random (the weights then come from a checkpoint)."""
    rgb: RgbBackboneConfig = field(default_factory=RgbBackboneConfig)
    """RGB backbone sizes and switches."""
    point_encoder: PointEncoderConfig = field(default_factory=PointEncoderConfig)
    keypoint_detector: KeypointDetectorConfig = field(default_factory=KeypointDetectorConfig)
    feature_aggregator: FeatureAggregatorConfig = field(default_factory=FeatureAggregatorConfig)
    front_door: FrontDoorConfig = field(default_factory=FrontDoorConfig)
    nocs_predictor: NocsPredictorConfig = field(default_factory=NocsPredictorConfig)
    reconstructor: ReconstructorConfig = field(default_factory=ReconstructorConfig)
    distillation: DistillationConfig = field(default_factory=DistillationConfig)
    use_front_door: bool = True
    """Ablation switch: False skips the front-door encoder (the GAFA output goes on unchanged)."""
    use_distillation: bool = True
    """Ablation switch: False skips the distillation outputs in training (the KD head is still built)."""
    fused_attention: bool = False
    """Speed switch: attention layers (ours and the PointBERT teacher's) use PyTorch's fused
    ``scaled_dot_product_attention`` instead of the reference's explicit softmax (same function, other
    rounding: about 1e-6 relative in float32). The timm DINOv2 blocks always use timm's setting."""

    def __post_init__(self) -> None:
        if self.nocs_predictor.num_categories != self.num_categories:
            raise ConfigError(
                f"nocs_predictor.num_categories {self.nocs_predictor.num_categories} differs from "
                f"num_categories {self.num_categories}"
            )

    @classmethod
    def from_reference_yaml(
        cls, pose_net: Mapping[str, Any], *, queue_length: int | None = None, source: str = "pose_net"
    ) -> ModelConfig:
        """Build a config from the reference's ``pose_net`` section (missing keys take camera_real values).

        Args:
            pose_net: the ``pose_net`` mapping of a reference YAML (``rgb_backbone``, ``cat_num``,
                ``select_num``, ``distillation_feat_dim``, ``FDEncoder``, ``IAKD``, ``GAFA``,
                ``NOCS_Predictor``, ``Reconstructor``). ``angle_range`` (HouseCat6D) is accepted and
                dropped: the reference network never reads it.
            queue_length: entries per category in the queue; None keeps the default (80).
            source: name used in error messages (the file name).

        Returns:
            The checked config.

        Raises:
            ConfigError: an unknown reference key (the message lists the valid ones), a bad value, or
                ``cat_num`` and ``NOCS_Predictor.cat_num`` that differ.
        """
        ours = _translate(pose_net, _REFERENCE_KEYS, source, "")
        if "num_categories" in ours:
            nocs = ours.setdefault("nocs_predictor", {})
            if "num_categories" not in nocs:
                nocs["num_categories"] = ours["num_categories"]
        elif "num_categories" in ours.get("nocs_predictor", {}):
            ours["num_categories"] = ours["nocs_predictor"]["num_categories"]
        if queue_length is not None:
            ours.setdefault("front_door", {})["queue_length"] = queue_length
        return config_from_dict(ours, cls, source=source)

    def to_reference_yaml(self) -> dict[str, Any]:
        """The reference ``pose_net`` section describing this network (inverse of ``from_reference_yaml``).

        Settings the reference cannot express (point-encoder sizes, dropout, distillation teacher
        choice, ablation switches, queue length) are left out.
        """
        ours = config_to_dict(self)
        return _untranslate(ours, _REFERENCE_KEYS)


# Reference key -> (our key, nested table or None). Reference names live only here.
_ATTENTION_KEYS: dict[str, tuple[str, Any]] = {
    "block_num": ("num_blocks", None),
    "d_model": ("model_dim", None),
    "num_head": ("num_heads", None),
    "dim_ffn": ("ffn_dim", None),
}
_REFERENCE_KEYS: dict[str, tuple[str, Any]] = {
    "rgb_backbone": ("rgb_backbone", None),
    "cat_num": ("num_categories", None),
    "select_num": ("front_door.num_queue_samples", None),
    "distillation_feat_dim": ("distillation.feature_dim", None),
    "angle_range": ("", None),  # present in housecat6d.yaml, never read by the reference network
    "FDEncoder": (
        "front_door",
        {
            "feat_dim": ("model_dim", None),
            "AttnLayer": ("cross_attention", _ATTENTION_KEYS),
            "SelfAttnLayer": ("self_attention", _ATTENTION_KEYS),
        },
    ),
    "IAKD": (
        "keypoint_detector",
        {
            "kpt_num": ("num_keypoints", None),
            "query_dim": ("query_dim", None),
            "AttnLayer": ("attention", _ATTENTION_KEYS),
        },
    ),
    "GAFA": (
        "feature_aggregator",
        {"block_num": ("num_blocks", None), "K": ("num_neighbors", None), "d_model": ("model_dim", None)},
    ),
    "NOCS_Predictor": (
        "nocs_predictor",
        {
            "cat_num": ("num_categories", None),
            "bins_num": ("num_bins", None),
            "AttnLayer": ("attention", _ATTENTION_KEYS),
        },
    ),
    "Reconstructor": (
        "reconstructor",
        {"pts_per_kpt": ("points_per_keypoint", None), "ndim": ("model_dim", None)},
    ),
}


# ---------------------------------------------------------------------------------------------------
# Upgrading older config versions (detectron2 ``config/compat.py``)
# ---------------------------------------------------------------------------------------------------

CONFIG_UPGRADES: dict[int, tuple[tuple[str, str], ...]] = {
    # 1 -> 2: one name per concept. Token/feature widths are `model_dim` everywhere (as in the attention
    # sections), ball-query neighbour counts `num_neighbors` (as in the feature aggregator).
    1: (
        ("point_encoder.num_samples", "point_encoder.num_neighbors"),
        ("front_door.feature_dim", "front_door.model_dim"),
        ("reconstructor.feature_dim", "reconstructor.model_dim"),
    ),
}
"""Key renames from version v to v + 1, as dotted paths inside a :class:`ModelConfig` section."""


def upgrade_config(data: Mapping[str, Any], cls: type, *, source: str = "<dict>") -> dict[str, Any]:
    """Rewrite a raw config mapping of an older ``version`` into the current version's keys.

    Applies :data:`CONFIG_UPGRADES` step by step to the :class:`ModelConfig` mapping: ``data`` itself when
    ``cls`` is :class:`ModelConfig`, its ``model`` section when ``cls`` is :class:`TrainConfig` (a ``model``
    section without its own ``version`` has the file's). Values are not checked here.

    Args:
        data: the raw mapping (not changed; a copy is returned), with ``version`` absent (current) or an int.
        cls: the top-level dataclass the mapping is for.
        source: file name used in error messages.

    Returns:
        The mapping in the current version's keys, with ``version`` set to :data:`CONFIG_VERSION`.

    Raises:
        ConfigError: a version that is not an int from 1 to :data:`CONFIG_VERSION`.
    """
    result = _deep_copy_mapping(data)
    version = _check_version(result.get("version", CONFIG_VERSION), source)
    model = result if cls is ModelConfig else result.get("model") if cls is TrainConfig else None
    if isinstance(model, dict):
        model_version = _check_version(model.get("version", version), source)
        for step in range(model_version, CONFIG_VERSION):
            for old, new in CONFIG_UPGRADES.get(step, ()):
                _rename_dotted(model, old, new)
        if "version" in model:
            model["version"] = CONFIG_VERSION
    if "version" in result:
        result["version"] = CONFIG_VERSION
    return result


def _check_version(version: Any, source: str) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= CONFIG_VERSION:
        raise ConfigError(
            f"{source}: unsupported config version {version!r}; this cleanpose reads versions 1 to {CONFIG_VERSION}"
        )
    return version


def _rename_dotted(data: dict[str, Any], old: str, new: str) -> None:
    *parents, last = old.split(".")
    section: Any = data
    for part in parents:
        section = section.get(part) if isinstance(section, dict) else None
    if isinstance(section, dict) and last in section:
        _set_dotted(data, new, section.pop(last))


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _get_dotted(source: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        source = source[part]
    return source


def _translate(data: Any, table: Mapping[str, tuple[str, Any]], source: str, prefix: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or 'pose_net'}' must be a mapping; got {data!r}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in table:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'; valid keys: {', '.join(sorted(table))}")
        ours, nested = table[key]
        if not ours:
            continue
        if nested is not None:
            value = _translate(value, nested, source, f"{prefix}{key}.")
            existing = _get_dotted(out, ours) if _has_dotted(out, ours) else {}
            value = {**existing, **value}
        _set_dotted(out, ours, value)
    return out


def _has_dotted(source: Mapping[str, Any], dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(source, Mapping) or part not in source:
            return False
        source = source[part]
    return True


def _untranslate(ours: Mapping[str, Any], table: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (our_key, nested) in table.items():
        if not our_key or not _has_dotted(ours, our_key):
            continue
        value = _get_dotted(ours, our_key)
        out[key] = _untranslate(value, nested) if nested is not None else value
    return out


# ---------------------------------------------------------------------------------------------------
# Generic loading, checking, overriding and saving
# ---------------------------------------------------------------------------------------------------


def load_config(source: str | Path | Mapping[str, Any], cls: type[T], *, overrides: Sequence[str] = ()) -> T:
    """Read and check a config.

    Args:
        source: a YAML file path, or an already parsed mapping.
        cls: the dataclass of the top level (for example :class:`ModelConfig`).
        overrides: ``"dotted.key=value"`` strings applied before checking (see :func:`apply_overrides`).

    Returns:
        The frozen, checked config tree.

    Raises:
        ConfigError: an unreadable file, an unknown key (the message lists the valid keys at that level),
            a wrong type, an out-of-range value, or an unsupported ``version``.
    """
    if isinstance(source, Mapping):
        name, data = "<dict>", dict(source)
    else:
        name = str(source)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"{name}: cannot read config file ({error.strerror})") from error
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"{name}: not valid YAML ({error})") from error
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{name}: the top level must be a mapping; got {type(data).__name__}")
    if any(f.name == "version" for f in dataclasses.fields(cls)):
        data = upgrade_config(data, cls, source=name)  # before the overrides, which use the current keys
    data = apply_overrides(data, overrides, cls)
    return config_from_dict(data, cls, source=name)


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str], cls: type) -> dict[str, Any]:
    """Apply ``--set key=value`` overrides to a raw config mapping.

    Args:
        data: the raw mapping (not changed; a copy is returned).
        overrides: strings ``"a.b.c=value"``; the value is parsed with YAML rules (``1`` is an int,
            ``[16, 32]`` a list, ``null`` None, ``dino`` a string).
        cls: the top-level dataclass; each dotted key must name one of its fields.

    Returns:
        A new mapping with the overrides applied.

    Raises:
        ConfigError: an override without ``=``, or a key that is not a field (valid keys are listed).
    """
    result = _deep_copy_mapping(data)
    for override in overrides:
        key, sep, raw = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {override!r}: expected key=value")
        level_cls: Any = cls
        parts = key.split(".")
        for depth, part in enumerate(parts):
            names = [f.name for f in dataclasses.fields(level_cls)]
            if part not in names:
                raise ConfigError(
                    f"--set {override}: unknown key '{'.'.join(parts[: depth + 1])}'; valid keys: {', '.join(names)}"
                )
            hint = typing.get_type_hints(level_cls)[part]
            if depth < len(parts) - 1:
                if not dataclasses.is_dataclass(hint):
                    raise ConfigError(f"--set {override}: '{'.'.join(parts[: depth + 1])}' is a value, not a section")
                level_cls = hint
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {override}: value is not valid YAML ({error})") from error
        target = result
        for part in parts[:-1]:
            existing = target.get(part)
            if not isinstance(existing, dict):
                existing = {}
                target[part] = existing
            target = existing
        target[parts[-1]] = value
    return result


def _deep_copy_mapping(data: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _deep_copy_mapping(value) if isinstance(value, Mapping) else value for key, value in data.items()}


def config_from_dict(data: Mapping[str, Any], cls: type[T], *, source: str = "<dict>", prefix: str = "") -> T:
    """Check a mapping against a dataclass tree and build it (missing keys take their defaults).

    Args:
        data: raw values, nested mappings for nested dataclasses.
        cls: the dataclass to build.
        source: file name used in error messages.
        prefix: dotted path of ``data`` inside the file, used in error messages.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: unknown key, wrong type, out-of-range value or unsupported version.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: '{prefix.rstrip('.')}' must be a mapping; got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if "version" in fields and not prefix:
        data = upgrade_config(data, cls, source=source)
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'; valid keys: {', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        dotted = f"{prefix}{name}"
        kwargs[name] = _check_value(value, hints[name], fields[name], source, dotted)
    try:
        return cls(**kwargs)
    except ConfigError as error:
        where = prefix.rstrip(".") or cls.__name__
        raise ConfigError(f"{source}: {where}: {error}") from None


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check_value(value: Any, hint: Any, spec: dataclasses.Field, source: str, dotted: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        return config_from_dict(value, hint, source=source, prefix=f"{dotted}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        remaining = [arg for arg in args if arg is not type(None)]
        if len(remaining) == 1:
            return _check_value(value, remaining[0], spec, source, dotted)
        raise ConfigError(f"{source}: '{dotted}' has an unsupported union type {hint}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: '{dotted}' is {value!r}; expected one of {', '.join(repr(a) for a in args)}")
        return value
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"{source}: '{dotted}' must be a list; got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_value(item, args[0], spec, source, f"{dotted}[{i}]") for i, item in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{source}: '{dotted}' must have {len(args)} entries; got {len(value)}")
        return tuple(
            _check_value(item, arg, spec, source, f"{dotted}[{i}]") for i, (item, arg) in enumerate(zip(value, args))
        )
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{dotted}' must be true or false; got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{dotted}' must be an integer; got {value!r}")
        _check_range(value, spec, source, dotted)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{dotted}' must be a number; got {value!r}")
        value = float(value)
        _check_range(value, spec, source, dotted)
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{dotted}' must be a string; got {value!r}")
        choices = spec.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{source}: '{dotted}' is {value!r}; expected one of {', '.join(choices)}")
        return value
    raise ConfigError(f"{source}: '{dotted}' has an unsupported field type {_type_name(hint)}")


def _check_range(value: float, spec: dataclasses.Field, source: str, dotted: str) -> None:
    low = spec.metadata.get("min")
    high = spec.metadata.get("max")
    if low is not None and value < low:
        raise ConfigError(f"{source}: '{dotted}' is {value}; expected >= {low}")
    if high is not None:
        if spec.metadata.get("max_exclusive") and value >= high:
            raise ConfigError(f"{source}: '{dotted}' is {value}; expected < {high}")
        if value > high:
            raise ConfigError(f"{source}: '{dotted}' is {value}; expected <= {high}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config tree as plain YAML-ready values (nested dicts, lists for tuples)."""
    if not dataclasses.is_dataclass(config):
        raise ConfigError(f"config_to_dict expects a config dataclass; got {type(config).__name__}")
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return config_to_dict(value)
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def save_config(config: Any, path: str | Path) -> None:
    """Write a config tree as YAML that :func:`load_config` reads back to an equal tree."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None)
    with atomic_writer(path, "w") as handle:
        handle.write(text)


# ---------------------------------------------------------------------------------------------------
# Training / testing run configuration (configs/*.yaml)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Where the data lives and how samples and batches are built (docs/data_formats.md §3–§5)."""

    format: Literal["nocs", "housecat6d"] = field(default="nocs", metadata={"choices": ("nocs", "housecat6d")})
    """On-disk layout of ``root``."""
    root: str = "data"
    """Dataset root (NOCS: holds ``camera/``, ``real/``, ``obj_models/``; HouseCat6D: ``scene*/``)."""
    sources: tuple[str, ...] = ("camera", "real")
    """NOCS training sources, concatenated in this order in every batch (``camera``, ``real``)."""
    batch_sizes: tuple[int, ...] = field(default=(30, 10), metadata={"min": 1})
    """Global objects per step from each source (reference syn_bs 30, real_bs 10; HouseCat6D 36)."""
    images_per_epoch: tuple[int, ...] = (120000, 40000)
    """Samples per epoch of each source (−1: every listed frame once); ``iterations_per_epoch`` × batch."""
    image_size: int = field(default=224, metadata={"min": 14})
    """Side of the square RGB crop, pixels."""
    num_points: int = field(default=1024, metadata={"min": 1})
    """Points sampled per object."""
    outlier_threshold: float = field(default=0.1, metadata={"min": 0.0})
    """``pc_mask`` distance threshold, normalized object units."""
    workers: int = field(default=4, metadata={"min": 0})
    """DataLoader worker processes per source."""
    depth_cache_dir: str | None = None
    """Folder for the on-disk cache of filled depth maps; None keeps an in-memory cache only."""
    decoded_cache_dir: str | None = None
    """Folder for the on-disk cache of decoded training colour and mask images (uncompressed ``.npy``, read
    memory-mapped: a sample then decodes no PNG and reads only its crop window; samples are bit-identical).
    About 1.2 MB per 640 × 480 frame (REAL train ≈ 5 GB, CAMERA train ≈ 340 GB); None (default) decodes every
    time. Entries are keyed by path, modification time and size, so an edited image is decoded again."""
    test_split: Literal["real", "camera", "housecat6d"] = field(
        default="real", metadata={"choices": ("real", "camera", "housecat6d")}
    )
    """Test set: REAL275 (``real``), CAMERA25 (``camera``) or HouseCat6D."""
    val_split: Literal["real", "camera", "housecat6d"] = field(
        default="camera", metadata={"choices": ("real", "camera", "housecat6d")}
    )
    """Held-out set of the validation during training (``run.validate_every``), read like ``test_split``:
    ``camera`` is CAMERA25 (``camera/val``, held-out instances), ``real`` REAL275, ``housecat6d`` its test scenes
    (HouseCat6D has no validation split)."""
    val_root: str | None = None
    """Dataset root of the validation set; None: ``root``."""
    val_masks: Literal["segmentation", "gt"] = field(
        default="segmentation", metadata={"choices": ("segmentation", "gt")}
    )
    """Validation detections: the segmentation results (as ``cleanpose test``) or ground-truth masks (NOCS)."""
    val_max_images: int = field(default=100, metadata={"min": 0})
    """Validation images, evenly spaced over the sorted split (image ``floor(i·n/k)``); 0: every image.
    They are read once and kept in memory (about 0.6 MB per object at 224 px)."""


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (docs/model.md §12; reference ``loss`` section)."""

    pose_weight: float = field(default=0.3, metadata={"min": 0.0})
    keypoint_coverage_weight: float = field(default=2.0, metadata={"min": 0.0})
    nocs_weight: float = field(default=2.0, metadata={"min": 0.0})
    diversity_weight: float = field(default=10.0, metadata={"min": 0.0})
    reconstruction_weight: float = field(default=15.0, metadata={"min": 0.0})
    delta_weight: float = field(default=1.0, metadata={"min": 0.0})
    distillation_weight: float = field(default=0.01, metadata={"min": 0.0})
    diversity_threshold: float = field(default=0.01, metadata={"min": 0.0})
    """Diversity threshold, metres (reference ``th``)."""
    object_aware: bool = True
    """Masked reconstruction Chamfer with ``pc_mask`` (NOCS); False for HouseCat6D."""


@dataclass(frozen=True)
class OptimConfig:
    """Adam with the reference's triangular CyclicLR (the optimiser's own lr is never used)."""

    base_lr: float = field(default=2e-5, metadata={"min": 0.0})
    max_lr: float = field(default=5e-4, metadata={"min": 0.0})
    step_size: int = field(default=20000, metadata={"min": 1})
    """Iterations of each half cycle (step_size_up = step_size_down)."""
    weight_decay: float = field(default=0.0, metadata={"min": 0.0})
    fused: bool = True
    """Adam's fused CUDA kernel (``torch.optim.Adam(fused=True)``) when every parameter is on a CUDA device;
    the CPU always uses the default implementation."""


@dataclass(frozen=True)
class RunConfig:
    """One training run: schedule, output, devices, precision."""

    out_dir: str = "runs/train"
    """Run folder: config.yaml, checkpoints/, tensorboard/, loss_curve.png, test results."""
    seed: int = field(default=42, metadata={"min": 0})
    """Seed of every draw (samples, augmentation, queue draws), keyed by (seed, epoch, index)."""
    epochs: int = field(default=30, metadata={"min": 1})
    iterations_per_epoch: int = field(default=4000, metadata={"min": 0})
    """Steps per epoch; 0 takes as many as the smallest source allows (drop_last), as HouseCat6D does."""
    checkpoint_every: int = field(default=1000, metadata={"min": 1})
    """Iterations between checkpoints (one is also written at every epoch end)."""
    keep_every: int = field(default=0, metadata={"min": 0})
    """Iterations between kept copies ``checkpoints/step_<step:06d>.pt`` of the checkpoint; 0 keeps none.
    A run of more epochs passes through the state of a shorter run with the same settings, so a kept copy
    is what that shorter run would have ended with (ablations at matched steps)."""
    log_every: int = field(default=50, metadata={"min": 1})
    """Iterations between loss logs (the only host synchronisation of the loop)."""
    micro_batches: int = field(default=1, metadata={"min": 1})
    """Pieces each rank's share of a step is split into (gradient accumulation; same result as more ranks)."""
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"choices": ("auto", "cpu", "cuda")})
    precision: Literal["fp32", "bf16"] = field(default="fp32", metadata={"choices": ("fp32", "bf16")})
    """bf16 autocast of the forward pass (CUDA); fp32 reproduces the reference."""
    cuda_graph: bool = False
    """Replay each step's forward, loss, backward and queue push from one CUDA graph (the same arithmetic and
    draws, without the host's kernel launches). Used on one CUDA process with one micro-batch; elsewhere the
    run logs why and steps eagerly."""
    initial_queue: str | None = None
    """Initial confounder queue file written by ``cleanpose queue``; required with the front door."""
    queue_teacher_checkpoint: str | None = None
    """Official ULIP PointNet2-SSG checkpoint for ``cleanpose queue``; None uses random weights (warned)."""
    validate_every: int = field(default=0, metadata={"min": 0})
    """Iterations between validations on ``data.val_split`` (and one at the last step); 0: no validation.
    Each writes the seven official mean APs to ``metrics.jsonl`` and TensorBoard (``tensorboard/val``)."""
    best_metric: Literal["iou25", "iou50", "iou75", "5deg2cm", "5deg5cm", "10deg2cm", "10deg5cm"] = field(
        default="10deg5cm",
        metadata={"choices": ("iou25", "iou50", "iou75", "5deg2cm", "5deg5cm", "10deg2cm", "10deg5cm")},
    )
    """Validation mean AP that picks ``checkpoints/best.pt`` (the highest; the earliest on ties)."""


@dataclass(frozen=True)
class TrainConfig:
    """A whole ``configs/*.yaml`` file: the model, the data, the loss, the optimiser and the run."""

    version: int = CONFIG_VERSION
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.data.format == "nocs" and len(self.data.sources) != len(self.data.batch_sizes):
            raise ConfigError(
                f"data.sources {self.data.sources} and data.batch_sizes {self.data.batch_sizes} differ in length"
            )
        if self.run.validate_every and (self.data.format == "housecat6d") != (self.data.val_split == "housecat6d"):
            raise ConfigError(
                f"data.val_split {self.data.val_split!r} does not fit data.format {self.data.format!r} "
                "(housecat6d validates on 'housecat6d'; nocs on 'camera' or 'real')"
            )
