"""Assertions shared by the test modules (importable as `assertions`, like `fakes`)."""

import torch


def assert_equal_state(a, b, where=""):
    """Nested state (tensors, dicts, lists, plain values) equal bit for bit, dtypes included;
    `where` names the first differing entry."""
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_equal_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_equal_state(x, y, f"{where}.{i}")
    else:
        assert a == b, where
