"""The fields of a checkpoint spec (also a bundle manifest's ``model``), checked before anything is built from
them: one line naming a wrong field (:class:`~edgeseg.validation.FieldError`)."""
from __future__ import annotations

from edgeseg.data.preprocessing import PreprocessSpec
from edgeseg.validation import (
    expect_choice,
    expect_dict,
    expect_int,
    expect_list,
    expect_number,
    expect_str,
    expect_str_list,
    fail,
)

# Module attributes that structured pruning changes (MultiHeadAttention keeps num_heads/head_dim).
WIDTH_ATTRS = ("in_channels", "out_channels", "in_features", "out_features", "num_features", "normalized_shape",
               "num_heads", "head_dim")

# Numbers in arch_kwargs are widths, depths, counts, sizes and ratios: none of a real network comes near 2**20,
# and bounding them keeps what a constructor computes from them (2**depth, width * ratio) small
MAX_ARCH_NUMBER = 1 << 20


def _numbers(value, field: str):
    """``(field, number)`` of every number in a JSON value (lists and objects walked)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        yield field, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{field}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{field}.{key}")


def _check_arch_kwargs(kwargs: dict, field: str) -> None:
    """JSON scalars, lists, or objects of those (nnU-Net's norm_op_kwargs); numbers finite and within
    ±MAX_ARCH_NUMBER."""
    plain = (str, int, float, bool, type(None), list)
    for key, value in kwargs.items():
        nested = isinstance(value, dict) and all(isinstance(v, plain) for v in value.values())
        if not isinstance(value, plain) and not nested:
            fail(f"{field}.{key}", f"expected a JSON scalar, list or object of those, got {type(value).__name__}")
    try:
        for where, number in _numbers(kwargs, field):
            expect_number(number, where, -MAX_ARCH_NUMBER, MAX_ARCH_NUMBER)
    except RecursionError:
        fail(field, "lists nested too deeply")


def _check_structure(structure, field: str) -> None:
    """A pruned structure: module name → {width attribute (``WIDTH_ATTRS``): int or list of ints}, parameter
    name → shape; any other attribute (``forward``, ``_modules``) is refused before a model is touched."""
    if structure is None:
        return
    expect_dict(structure, field)
    for name, attrs in expect_dict(structure.get("modules", {}), f"{field}.modules").items():
        for attr, value in expect_dict(attrs, f"{field}.modules.{name}").items():
            where = f"{field}.modules.{name}.{attr}"
            if attr not in WIDTH_ATTRS:
                fail(where, f"not a width structured pruning changes ({', '.join(WIDTH_ATTRS)})")
            for n in (expect_list(value, where, 1, 8) if isinstance(value, list) else [value]):
                expect_int(n, where, 0, MAX_ARCH_NUMBER)
    for name, shape in expect_dict(structure.get("parameters", {}), f"{field}.parameters").items():
        for n in expect_list(shape, f"{field}.parameters.{name}", 0, 8):
            expect_int(n, f"{field}.parameters.{name}", 0, MAX_ARCH_NUMBER)


def check_model_fields(d: dict, field: str, preprocessing_field: str | None = None) -> dict:
    """``d`` (a checkpoint spec, or a bundle's model + preprocessing) with its spec fields type-checked and its
    preprocessing as a :class:`PreprocessSpec`."""
    pre_field = preprocessing_field or f"{field}.preprocessing"
    for key in ("arch", "in_channels", "num_classes", "label_names", "preprocessing"):
        if key not in d:
            fail(f"{field}.{key}", "missing")
    expect_str(d["arch"], f"{field}.arch", max_len=64)
    in_channels = expect_int(d["in_channels"], f"{field}.in_channels", 1, 64)
    num_classes = expect_int(d["num_classes"], f"{field}.num_classes", 2, 255)  # label maps are uint8
    expect_str_list(d["label_names"], f"{field}.label_names", num_classes, num_classes)
    dims = expect_choice(d.get("spatial_dims", 2), f"{field}.spatial_dims", (2, 3))
    _check_arch_kwargs(expect_dict(d.get("arch_kwargs", {}), f"{field}.arch_kwargs"), f"{field}.arch_kwargs")
    for key in ("data", "metrics", "training", "pruning"):
        expect_dict(d.get(key, {}), f"{field}.{key}")
    _check_structure(d.get("pruning", {}).get("structure"), f"{field}.pruning.structure")
    pre = PreprocessSpec.from_dict(d["preprocessing"], pre_field)
    if len(pre.size) != dims:
        fail(f"{pre_field}.size", f"{len(pre.size)} sides for a {dims}D model")
    if pre.in_channels != in_channels:
        fail(f"{pre_field}.channel_names", f"{pre.in_channels} names for {in_channels} input channel(s)")
    return {**d, "preprocessing": pre}
