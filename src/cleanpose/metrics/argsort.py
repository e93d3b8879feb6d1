"""The reference's sort order for equal values: a port of NumPy's generic ``argsort`` (docs/metrics.md §6.3).

The official metric code calls ``np.argsort`` (kind ``quicksort``) on scores, IoUs and pose errors, and
its numbers depend on the order that sort gives equal values. NumPy's generic ``quicksort`` — what every
NumPy before 1.25 runs, and 1.25–1.26 on CPUs without AVX-512 — is an introsort: median-of-3 quicksort,
insertion sort on ranges of at most 16 elements, heapsort when the recursion gets too deep. It is not
stable beyond 16 elements, but deterministic. ``introsort_argsort`` replays it step by step;
``reference_argsort`` returns the same permutation and takes NumPy's stable sort wherever that provably
gives the same answer (16 elements or fewer, where the insertion sort is stable; or no two values equal).

Comparisons follow NumPy's float order: NaN after every number, NaNs equal to each other, ``-0.0 == 0.0``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["TIE_ORDERS", "TieOrder", "descending_order", "introsort_argsort", "reference_argsort"]

TieOrder = Literal["reference", "stable"]
TIE_ORDERS: tuple[str, ...] = ("reference", "stable")
"""``reference``: NumPy's generic introsort, as the official code; ``stable``: among equal values the
later element first in a descending order (the reverse of a stable ascending sort)."""

SMALL_QUICKSORT = 15
"""A range ``[lo, hi]`` with ``hi − lo`` at most this (≤ 16 elements) is insertion sorted (NumPy's value)."""


def _rank_keys(values: np.ndarray) -> list[int]:
    """Dense ranks with NumPy's float order (NaN last and equal to NaN, -0.0 equal to 0.0), as Python ints.

    The port compares these instead of the floats: ``rank(a) < rank(b)`` exactly when NumPy's ``a < b``.
    """
    _, inverse = np.unique(values, return_inverse=True, equal_nan=True)
    return inverse.reshape(-1).tolist()


def introsort_argsort(values: np.ndarray) -> np.ndarray:
    """NumPy's generic ``argsort(kind="quicksort")`` (``aquicksort`` of NumPy ≤ 1.26), replayed in Python.

    Args:
        values: (N,) real numbers (any float or int dtype; NaN allowed).
    Returns:
        (N,) int64 permutation sorting ``values`` ascending, equal values in NumPy's generic order.
    """
    values = np.asarray(values).reshape(-1)
    num = len(values)
    if num < 2:
        return np.arange(num, dtype=np.int64)
    keys = _rank_keys(values)
    order = list(range(num))
    stack: list[tuple[int, int, int]] = []
    low, high = 0, num - 1
    depth = 2 * (num.bit_length() - 1)  # npy_get_msb(num) * 2
    while True:
        if depth < 0:
            _heapsort(keys, order, low, high - low + 1)
        else:
            while high - low > SMALL_QUICKSORT:
                low, high, pushed = _partition(keys, order, low, high)
                depth -= 1
                stack.append((*pushed, depth))
            _insertion_sort(keys, order, low, high)
        if not stack:
            break
        low, high, depth = stack.pop()
    return np.asarray(order, dtype=np.int64)


def _partition(keys: list, order: list[int], low: int, high: int) -> tuple[int, int, tuple[int, int]]:
    """One median-of-3 partition step of ``order[low:high + 1]``.

    Returns ``(low, high, pushed)``: the smaller side, sorted next, and the larger side, pushed on the stack.
    """
    middle = low + ((high - low) >> 1)
    if keys[order[middle]] < keys[order[low]]:
        order[middle], order[low] = order[low], order[middle]
    if keys[order[high]] < keys[order[middle]]:
        order[high], order[middle] = order[middle], order[high]
    if keys[order[middle]] < keys[order[low]]:
        order[middle], order[low] = order[low], order[middle]
    pivot = keys[order[middle]]
    left, right = low, high - 1
    order[middle], order[right] = order[right], order[middle]
    while True:
        left += 1
        while keys[order[left]] < pivot:
            left += 1
        right -= 1
        while pivot < keys[order[right]]:
            right -= 1
        if left >= right:
            break
        order[left], order[right] = order[right], order[left]
    order[left], order[high - 1] = order[high - 1], order[left]
    if left - low < high - left:
        return low, left - 1, (left + 1, high)
    return left + 1, high, (low, left - 1)


def _insertion_sort(keys: list, order: list[int], low: int, high: int) -> None:
    for current in range(low + 1, high + 1):
        item = order[current]
        key = keys[item]
        position = current
        while position > low and key < keys[order[position - 1]]:
            order[position] = order[position - 1]
            position -= 1
        order[position] = item


def _heapsort(keys: list, order: list[int], start: int, count: int) -> None:
    """NumPy's ``aheapsort`` of ``order[start:start + count]`` (1-based heap indices ``start − 1 + i``)."""
    base = start - 1

    def sift(item: int, node: int, size: int) -> None:
        child = node << 1
        while child <= size:
            if child < size and keys[order[base + child]] < keys[order[base + child + 1]]:
                child += 1
            if keys[item] < keys[order[base + child]]:
                order[base + node] = order[base + child]
                node = child
                child += child
            else:
                break
        order[base + node] = item

    for node in range(count >> 1, 0, -1):
        sift(order[base + node], node, count)
    size = count
    while size > 1:
        item = order[base + size]
        order[base + size] = order[base + 1]
        size -= 1
        sift(item, 1, size)


def reference_argsort(values: np.ndarray) -> np.ndarray:
    """``introsort_argsort(values)``, computed by NumPy's stable sort where both give the same order.

    They agree when ``N ≤ 16`` (only the stable insertion sort runs) or when no two values are equal
    (a sort order without ties is unique); only the remaining arrays take the Python port.

    Args:
        values: (N,) real numbers.
    Returns:
        (N,) int64 ascending permutation.
    """
    values = np.asarray(values).reshape(-1)
    stable = np.argsort(values, kind="stable")
    if len(values) <= SMALL_QUICKSORT + 1 or not _has_ties(values[stable]):
        return stable
    return introsort_argsort(values)


def _has_ties(sorted_values: np.ndarray) -> bool:
    """Whether an ascending array (NaN last) holds two equal values or two NaNs."""
    if sorted_values.dtype.kind == "f" and len(sorted_values) > 1 and np.isnan(sorted_values[-2]):
        return True
    return bool(np.any(sorted_values[1:] == sorted_values[:-1]))


def descending_order(values: np.ndarray, tie_order: TieOrder = "reference") -> np.ndarray:
    """The official ``np.argsort(values)[::-1]``: indices sorting ``values`` descending.

    Args:
        values: (N,) real numbers.
        tie_order: ``"reference"`` (NumPy's generic introsort, reversed) or ``"stable"`` (equal values:
            the later element first).
    Returns:
        (N,) int64 permutation.
    """
    return ascending_order(values, tie_order)[::-1]


def ascending_order(values: np.ndarray, tie_order: TieOrder = "reference") -> np.ndarray:
    """The official ``np.argsort(values)`` (``"stable"``: equal values in stored order), NaN last."""
    if tie_order == "reference":
        return reference_argsort(values)
    if tie_order == "stable":
        return np.argsort(np.asarray(values).reshape(-1), kind="stable")
    raise ValueError(f"tie_order must be one of {TIE_ORDERS}; got {tie_order!r}")
