"""The initial queue's teacher: random weights without a ULIP file are drawn from the run's seed."""

import torch

from cleanpose.engine.queue_extraction import build_queue_teacher
from cleanpose.models.distillation import PointNet2SSGTeacher


def _state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed + 100)  # the global generator must not matter
    return build_queue_teacher(None, seed).state_dict()


def test_a_queue_teacher_without_checkpoint_depends_only_on_the_seed():
    first, again, other = _state(3), _state(3), _state(4)
    assert first.keys() == again.keys() == PointNet2SSGTeacher(mode="eval").state_dict().keys()
    for key, value in first.items():
        assert torch.equal(value, again[key]), key
    weights = [key for key in first if key.endswith("weight") and first[key].dim() > 1]
    assert weights and all(not torch.equal(first[key], other[key]) for key in weights)


def test_the_queue_teacher_is_frozen_in_eval_mode():
    teacher = build_queue_teacher(None, 0)
    assert not teacher.training
    assert not any(parameter.requires_grad for parameter in teacher.parameters())
