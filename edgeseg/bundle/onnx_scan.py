"""What an ONNX file would make a runtime read besides itself, found without the ``onnx`` package.

A tensor stored as external data names a file that ONNX Runtime opens relative to the model's folder — or,
for a model given as bytes, relative to the current directory. Bundles hold self-contained ONNX files, so
any external reference is refused before a runtime sees the model. This walks the protobuf wire format of
``ModelProto`` down to every ``TensorProto`` (initializers, sparse initializers, node attributes, subgraphs,
functions, training graphs) and reads its ``data_location`` and ``external_data``; it also returns the
model's ``metadata_props``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from edgeseg.errors import EdgesegError, VerificationError

# field numbers from onnx.proto
_MODEL = {"graph": 7, "metadata_props": 14, "training_info": 20, "functions": 25}
_GRAPH = {"node": 1, "initializer": 5, "sparse_initializer": 15}
_NODE_ATTRIBUTE, _FUNCTION_NODE, _FUNCTION_ATTRIBUTE = 5, 7, 11  # FunctionProto.attribute_proto: default values
_TRAINING_GRAPHS = (1, 2)          # TrainingInfoProto.initialization, .algorithm
_ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE = (5, 10), (6, 11), (22, 23)
_SPARSE_TENSORS = (1, 2)           # SparseTensorProto.values, .indices
_TENSOR_NAME, _TENSOR_EXTERNAL, _TENSOR_LOCATION = 8, 13, 14
_EXTERNAL = 1                      # TensorProto.DataLocation.EXTERNAL
_MAX_DEPTH = 64


@dataclass
class OnnxScan:
    external: list[tuple[str, str]] = field(default_factory=list)  # (tensor name, location)
    metadata: dict[str, str] = field(default_factory=dict)


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes, start: int, end: int):
    """``(field number, wire type, value or (start, end))`` of each field of one message."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
            if pos + size > end:
                raise ValueError("truncated field")
            yield number, wire, (pos, pos + size)
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > end:
            raise ValueError("truncated field")


def _text(buf: bytes, span) -> str:
    return buf[span[0] : span[1]].decode("utf-8", "replace")


def _entry(buf: bytes, span) -> tuple[str, str]:
    key = value = ""
    for number, wire, v in _fields(buf, *span):
        if wire == 2 and number == 1:
            key = _text(buf, v)
        elif wire == 2 and number == 2:
            value = _text(buf, v)
    return key, value


def _tensor(buf: bytes, span, scan: OnnxScan) -> None:
    name, location, external = "", None, False
    for number, wire, v in _fields(buf, *span):
        if number == _TENSOR_NAME and wire == 2:
            name = _text(buf, v)
        elif number == _TENSOR_LOCATION and wire == 0:
            external = v == _EXTERNAL
        elif number == _TENSOR_EXTERNAL and wire == 2:
            key, value = _entry(buf, v)
            if key == "location":
                location = value
    if external or location is not None:
        scan.external.append((name, location or ""))


def _children(buf: bytes, span, kinds: dict[int, str]):
    for number, wire, v in _fields(buf, *span):
        if wire == 2 and number in kinds:
            yield kinds[number], v


def _graph(buf: bytes, span, scan: OnnxScan, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError("graphs nested too deeply")
    for kind, v in _children(buf, span, {1: "node", 5: "tensor", 15: "sparse"}):
        if kind == "node":
            _node(buf, v, scan, depth)
        elif kind == "tensor":
            _tensor(buf, v, scan)
        else:
            _sparse(buf, v, scan)


def _sparse(buf: bytes, span, scan: OnnxScan) -> None:
    for _, v in _children(buf, span, dict.fromkeys(_SPARSE_TENSORS, "tensor")):
        _tensor(buf, v, scan)


def _node(buf: bytes, span, scan: OnnxScan, depth: int) -> None:
    for _, attr in _children(buf, span, {_NODE_ATTRIBUTE: "attribute"}):
        _attribute(buf, attr, scan, depth)


def _attribute(buf: bytes, span, scan: OnnxScan, depth: int) -> None:
    """The tensors and graphs of one ``AttributeProto`` (of a node, or a function's default attribute value)."""
    kinds = {**dict.fromkeys(_ATTR_TENSORS, "tensor"), **dict.fromkeys(_ATTR_GRAPHS, "graph"),
             **dict.fromkeys(_ATTR_SPARSE, "sparse")}
    for kind, v in _children(buf, span, kinds):
        if kind == "tensor":
            _tensor(buf, v, scan)
        elif kind == "graph":
            _graph(buf, v, scan, depth + 1)
        else:
            _sparse(buf, v, scan)


def scan_onnx(data: bytes, source: str) -> OnnxScan:
    """External-data references and ``metadata_props`` of serialized ONNX ``data`` (``source`` names it)."""
    scan = OnnxScan()
    try:
        for number, wire, v in _fields(data, 0, len(data)):
            if wire != 2:
                continue
            if number == _MODEL["graph"]:
                _graph(data, v, scan, 0)
            elif number == _MODEL["metadata_props"]:
                key, value = _entry(data, v)
                scan.metadata[key] = value
            elif number == _MODEL["training_info"]:
                for _, g in _children(data, v, dict.fromkeys(_TRAINING_GRAPHS, "graph")):
                    _graph(data, g, scan, 1)
            elif number == _MODEL["functions"]:
                for kind, part in _children(data, v, {_FUNCTION_NODE: "node", _FUNCTION_ATTRIBUTE: "attribute"}):
                    (_node if kind == "node" else _attribute)(data, part, scan, 1)
    except ValueError as exc:
        raise EdgesegError(f"{source}: not a valid ONNX file ({exc})") from None
    return scan


def check_self_contained(data: bytes, source: str) -> OnnxScan:
    """Refuse ONNX ``data`` that references external data (a file the runtime would open besides it)."""
    scan = scan_onnx(data, source)
    if scan.external:
        tensor, location = scan.external[0]
        more = f" (+{len(scan.external) - 1} more)" if len(scan.external) > 1 else ""
        raise VerificationError(f"{source}: tensor {tensor!r} is stored in an external file {location!r}{more}; "
                           "bundle ONNX files must be self-contained, external data is never loaded")
    return scan
