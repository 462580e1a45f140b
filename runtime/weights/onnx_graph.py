"""An exported ONNX model and its weight-free graph, at the level of protobuf's wire format (no ``onnx`` package).

The weight-free graph is the exported ``model.onnx`` with the bytes of its weight tensors taken out: every *slot*
(an initializer, named by its ``name``, or the ``value`` tensor of a ``Constant`` node, named by the node's
output) keeps its name, dims and data type and loses only its ``raw_data`` field; every other byte stays as the
exporter wrote it. :func:`strip` takes the bytes out, :func:`fill` puts them back in field-number order (where a
protobuf serializer writes them), so ``fill(strip(model), data) == model`` byte for byte (checked where the graph
is generated, ``python -m export.weight_free``).

Only the messages on the way to a slot are re-encoded (ModelProto.graph, GraphProto.node / .initializer,
NodeProto.attribute, AttributeProto.t, TensorProto.raw_data); every other field is copied as it was.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from runtime.errors import ArtifactError

# field numbers (onnx/onnx.proto)
MODEL_GRAPH = 7
GRAPH_NODE, GRAPH_INITIALIZER = 1, 5
NODE_OUTPUT, NODE_OP_TYPE, NODE_ATTRIBUTE = 2, 4, 5
ATTRIBUTE_NAME, ATTRIBUTE_TENSOR = 1, 5
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_NAME, TENSOR_RAW_DATA, TENSOR_DATA_LOCATION = 1, 2, 8, 9, 14
TENSOR_TYPED_DATA = (4, 5, 6, 7, 10, 11)  # float_data .. uint64_data: a slot holds its bytes in raw_data only
DTYPES = {1: "float32"}  # the slots' data types (TensorProto.DataType), as numpy names
VARINT, I64, LEN, I32 = 0, 1, 2, 5

Bytes = bytes | memoryview


@dataclass(frozen=True)
class Slot:
    """One weight tensor's place in the graph: ``initializer:<name>`` or ``constant:<node output>``."""

    id: str
    dims: tuple[int, ...]
    dtype: str


class GraphFormatError(ArtifactError):
    """Bytes that are not the ONNX protobuf this module expects (one line)."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise GraphFormatError("truncated or malformed varint in the ONNX protobuf")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def fields(buf: Bytes) -> Iterator[tuple[int, int, memoryview, memoryview]]:
    """(field number, wire type, the field's whole encoding, its value: a LEN field's payload, else the raw
    value bytes) of each field of one message, in order."""
    buf = memoryview(buf)
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            _, end = _varint(buf, pos)
            value_start = pos
        elif wire == LEN:
            length, value_start = _varint(buf, pos)
            end = value_start + length
        elif wire in (I64, I32):
            value_start, end = pos, pos + (8 if wire == I64 else 4)
        else:
            raise GraphFormatError(f"unsupported protobuf wire type {wire} (field {number})")
        if end > len(buf) or number == 0:
            raise GraphFormatError(f"truncated protobuf field {number}")
        pos = end
        yield number, wire, buf[start:end], buf[value_start:end]


class Chunks:
    """Bytes to write, as pieces (large tensors are never copied into one buffer until written)."""

    def __init__(self) -> None:
        self.parts: list[Bytes] = []
        self.size = 0

    def add(self, piece: Bytes) -> None:
        self.parts.append(piece)
        self.size += len(piece)

    def add_message(self, number: int, body: Chunks) -> None:
        self.add(encode_varint(number << 3 | LEN) + encode_varint(body.size))
        self.parts.extend(body.parts)
        self.size += body.size

    def tobytes(self) -> bytes:
        return b"".join(self.parts)


def _dims_and_type(tensor: Bytes) -> tuple[tuple[int, ...], int, str]:
    dims, data_type, name = [], 0, ""
    for number, wire, _, value in fields(tensor):
        if number == TENSOR_DIMS and wire == VARINT:
            dims.append(_varint(value, 0)[0])
        elif number == TENSOR_DIMS and wire == LEN:  # packed
            pos = 0
            while pos < len(value):
                dim, pos = _varint(value, pos)
                dims.append(dim)
        elif number == TENSOR_DATA_TYPE:
            data_type = _varint(value, 0)[0]
        elif number == TENSOR_NAME:
            name = bytes(value).decode("utf-8")
    return tuple(dims), data_type, name


def _constant_slot(node: Bytes) -> str | None:
    """The slot id of a Constant node with a ``value`` tensor (``constant:<its output>``), else None."""
    op_type, output, has_value = "", "", False
    for number, _, _, payload in fields(node):
        if number == NODE_OP_TYPE:
            op_type = bytes(payload).decode("utf-8")
        elif number == NODE_OUTPUT and not output:
            output = bytes(payload).decode("utf-8")
        elif number == NODE_ATTRIBUTE:
            names = [bytes(p).decode("utf-8") for n, _, _, p in fields(payload) if n == ATTRIBUTE_NAME]
            has_value = has_value or names == ["value"]
    return f"constant:{output}" if op_type == "Constant" and has_value else None


def _holds_data(tensor: Bytes) -> bool:
    """Whether a TensorProto has its values: raw_data, a typed data field, or data_location EXTERNAL."""
    for number, _, _, value in fields(tensor):
        if number == TENSOR_RAW_DATA or number in TENSOR_TYPED_DATA:
            return True
        if number == TENSOR_DATA_LOCATION and _varint(value, 0)[0] != 0:
            return True
    return False


TensorEdit = Callable[[str, memoryview], Chunks | None]  # (slot id, TensorProto) -> new TensorProto, or None: as is


def _rewrite_graph(graph: Bytes, edit: TensorEdit) -> Chunks:
    out = Chunks()
    for number, _, whole, payload in fields(graph):
        new = None
        if number == GRAPH_INITIALIZER:
            new = edit(f"initializer:{_dims_and_type(payload)[2]}", payload)
        elif number == GRAPH_NODE and (slot := _constant_slot(payload)) is not None:
            new = _rewrite_node(payload, slot, edit)
        if new is None:
            out.add(whole)
        else:
            out.add_message(number, new)
    return out


def _rewrite_node(node: Bytes, slot: str, edit: TensorEdit) -> Chunks:
    out = Chunks()
    for number, _, whole, payload in fields(node):
        if number != NODE_ATTRIBUTE:
            out.add(whole)
            continue
        attribute = Chunks()
        for n, _, w, p in fields(payload):
            new = edit(slot, p) if n == ATTRIBUTE_TENSOR else None
            if new is None:
                attribute.add(w)
            else:
                attribute.add_message(n, new)
        out.add_message(number, attribute)
    return out


def rewrite(model: Bytes, edit: TensorEdit) -> Chunks:
    """The model with every slot tensor passed through ``edit``."""
    out = Chunks()
    for number, _, whole, payload in fields(model):
        if number == MODEL_GRAPH:
            out.add_message(number, _rewrite_graph(payload, edit))
        else:
            out.add(whole)
    return out


def strip(model: Bytes, is_weight: Callable[[Slot], bool]) -> tuple[bytes, dict[str, tuple[Slot, memoryview]]]:
    """(the weight-free graph, {slot id: (slot, its raw bytes)}) for the slots ``is_weight`` picks among the float
    tensors that hold their data as raw_data."""
    taken: dict[str, tuple[Slot, memoryview]] = {}

    def edit(slot_id: str, tensor: memoryview) -> Chunks | None:
        dims, data_type, _ = _dims_and_type(tensor)
        raw = [p for n, _, _, p in fields(tensor) if n == TENSOR_RAW_DATA]
        if data_type not in DTYPES or len(raw) != 1:
            return None
        slot = Slot(slot_id, dims, DTYPES[data_type])
        if not is_weight(slot):
            return None
        if slot_id in taken:
            raise GraphFormatError(f"two weight tensors share the slot id {slot_id!r}")
        taken[slot_id] = (slot, raw[0])
        out = Chunks()
        for number, _, whole, _ in fields(tensor):
            if number != TENSOR_RAW_DATA:
                out.add(whole)
        return out

    return rewrite(model, edit).tobytes(), taken


def slots(graph: Bytes) -> list[Slot]:
    """The slots of a weight-free graph (tensors with a data type and no data at all), in file order."""
    found: list[Slot] = []

    def edit(slot_id: str, tensor: memoryview) -> None:
        if not _holds_data(tensor):
            dims, data_type, _ = _dims_and_type(tensor)
            if data_type not in DTYPES:
                raise GraphFormatError(f"slot {slot_id} has data type {data_type}, expected float32")
            found.append(Slot(slot_id, dims, DTYPES[data_type]))
        return None

    rewrite(graph, edit)
    return found


def fill(graph: Bytes, data: Mapping[str, Bytes]) -> Chunks:
    """The weight-free graph with each slot's raw_data put back (``data``: slot id -> little-endian bytes); every
    slot of the graph must be given, with exactly its dims' size."""
    done: set[str] = set()

    def edit(slot_id: str, tensor: memoryview) -> Chunks | None:
        if slot_id not in data:
            if not _holds_data(tensor):
                raise GraphFormatError(f"no data given for the graph's slot {slot_id!r}")
            return None
        dims, data_type, _ = _dims_and_type(tensor)
        size = 4
        for dim in dims:
            size *= dim
        if data_type not in DTYPES or len(data[slot_id]) != size:
            raise GraphFormatError(f"slot {slot_id}: {len(data[slot_id])} bytes for dims {list(dims)} "
                                   f"of data type {data_type}")
        out, placed = Chunks(), False
        for number, _, whole, _ in fields(tensor):
            if number == TENSOR_RAW_DATA or number in TENSOR_TYPED_DATA:
                raise GraphFormatError(f"slot {slot_id} already holds data")
            if number > TENSOR_RAW_DATA and not placed:
                out.add(encode_varint(TENSOR_RAW_DATA << 3 | LEN) + encode_varint(size))
                out.add(data[slot_id])
                placed = True
            out.add(whole)
        if not placed:
            out.add(encode_varint(TENSOR_RAW_DATA << 3 | LEN) + encode_varint(size))
            out.add(data[slot_id])
        done.add(slot_id)
        return out

    filled = rewrite(graph, edit)
    missing = sorted(set(data) - done)
    if missing:
        raise GraphFormatError(f"the graph has no slot {missing[0]!r} ({len(missing)} given slots not found)")
    return filled
