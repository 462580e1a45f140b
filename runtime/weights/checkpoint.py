"""Upstream's checkpoints read without torch: tensors and plain containers only, nothing else is unpickled.

Upstream's weights files (``pretrained_weights_*.npz``, despite the name) are ``torch.save({"unet": state_dict})``
in either of PyTorch's formats: the zip archive (``<prefix>/data.pkl`` plus one ``<prefix>/data/<key>`` record per
storage) or the legacy stream (pickled magic number, protocol version and system info, the object, the storage keys,
then each storage as an int64 element count and its bytes). Both pickle the object with *persistent ids* for the
storages and rebuild each tensor by calling ``torch._utils._rebuild_tensor_v2``.

:class:`RestrictedUnpickler` resolves only the globals in :data:`ALLOWED`, each mapped to a numpy stand-in (the
rebuild functions, the typed storage classes, ``collections.OrderedDict``); any other global (``os.system``,
``builtins.eval``, a torch module class) is refused with :class:`CheckpointError` before it could be called, so a
hostile file runs none of its code. Tensors are views of their storage (offset, size, stride, checked against the
storage's length) and come back as float32 arrays, as ``torch.load(...).float()`` gives them.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import TractSegError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# torch's typed storage classes (pickled as `torch.<Name>`) -> numpy dtype (little-endian; BFloat16 as its bits)
STORAGE_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "BFloat16Storage": "<u2",
                  "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
                  "ByteStorage": "u1", "BoolStorage": "?"}


class CheckpointError(TractSegError):
    """A checkpoint that cannot be read or is refused; one line naming the file."""


@dataclass(frozen=True, slots=True)
class StorageType:
    name: str
    dtype: str


@dataclass(frozen=True, slots=True)
class StorageRef:
    """A storage named by the pickle's persistent id; its bytes are read after the pickle (legacy) or from the
    archive (zip). ``view``: (offset, numel) of a legacy storage view of the root storage."""

    key: str
    type: StorageType
    numel: int
    view: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class TensorRef:
    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(v) is int and v >= 0 for v in value):
        raise pickle.UnpicklingError(f"tensor {what} {value!r:.60} is not a tuple of non-negative integers")
    return value


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    backward_hooks: Any = None, metadata: Any = None) -> TensorRef:
    """torch._utils._rebuild_tensor(_v2): a plain dense tensor, nothing attached."""
    if not isinstance(storage, StorageRef) or type(storage_offset) is not int or storage_offset < 0:
        raise pickle.UnpicklingError("a tensor without a storage from this file")
    if backward_hooks or metadata or not isinstance(requires_grad, bool):
        raise pickle.UnpicklingError("a tensor with hooks or metadata (only plain tensors are read)")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"tensor size {size} and stride {stride} differ in length")
    return TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> TensorRef:
    if not isinstance(data, TensorRef) or backward_hooks:
        raise pickle.UnpicklingError("a parameter that is not a plain tensor")
    return data


ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that knows only :data:`ALLOWED` and storage persistent ids."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise pickle.UnpicklingError(f"refused global {module}.{name} (only tensors and plain containers "
                                         "are read)") from None

    def persistent_load(self, pid: Any) -> StorageRef:
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] not in ("storage", b"storage"):
            raise pickle.UnpicklingError(f"refused persistent id {pid!r:.60}")
        _, kind, key, _location, numel, *view = pid
        if not isinstance(kind, StorageType) or not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage id {pid!r:.80}")
        if view and view[0] is not None:
            _view_key, offset, view_numel = view[0]  # a view of the root storage `key`
            if type(offset) is not int or type(view_numel) is not int or offset < 0 or view_numel < 0:
                raise pickle.UnpicklingError(f"malformed storage view {view[0]!r:.60}")
            return StorageRef(key, kind, numel, (offset, view_numel))
        return StorageRef(key, kind, numel)


def _unpickle(stream: io.BufferedIOBase | io.BytesIO) -> Any:
    return RestrictedUnpickler(stream).load()


def _tensor(ref: TensorRef, storages: dict[str, np.ndarray], byteorder: str) -> np.ndarray:
    root = storages.get(ref.storage.key)
    if root is None:
        raise CheckpointError(f"no data for storage {ref.storage.key!r}")
    if byteorder == "big":
        root = root.view(root.dtype.newbyteorder(">"))
    if ref.storage.view is not None:
        start, numel = ref.storage.view
        root = root[start:start + numel]
    needed = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride)) + 1 if all(ref.size) else 0
    if needed > len(root):
        raise CheckpointError(f"a tensor of size {ref.size} reaches past its storage ({len(root)} elements)")
    view = np.lib.stride_tricks.as_strided(root[ref.offset:], shape=ref.size,
                                           strides=tuple(s * root.itemsize for s in ref.stride), writeable=False)
    if ref.storage.type.name == "BFloat16Storage":
        return (view.astype("<u4") << 16).view("<f4").astype(np.float32)
    return np.array(view, dtype=np.float32)


def _resolve(obj: Any, storages: dict[str, np.ndarray], byteorder: str) -> Any:
    if isinstance(obj, TensorRef):
        return _tensor(obj, storages, byteorder)
    if isinstance(obj, dict):
        return {k: _resolve(v, storages, byteorder) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v, storages, byteorder) for v in obj)
    return obj


def _zip_storages(archive: zipfile.ZipFile, prefix: str, refs: list[StorageRef]) -> dict[str, np.ndarray]:
    storages = {}
    for ref in refs:
        if ref.key in storages:
            continue
        dtype = np.dtype(ref.type.dtype)
        try:
            data = archive.read(f"{prefix}data/{ref.key}")
        except KeyError:
            raise CheckpointError(f"storage record {prefix}data/{ref.key} is missing") from None
        if len(data) < ref.numel * dtype.itemsize:
            raise CheckpointError(f"storage {ref.key} holds {len(data)} bytes, expected {ref.numel * dtype.itemsize}")
        storages[ref.key] = np.frombuffer(data, dtype=dtype, count=ref.numel)
    return storages


def _storage_refs(obj: Any) -> list[StorageRef]:
    if isinstance(obj, TensorRef):
        return [obj.storage]
    if isinstance(obj, dict):
        return [r for v in obj.values() for r in _storage_refs(v)]
    if isinstance(obj, (list, tuple)):
        return [r for v in obj for r in _storage_refs(v)]
    return []


def _read_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError("a zip file without one <name>/data.pkl (not a torch.save archive)")
        prefix = pickles[0][: -len("data.pkl")]
        names = set(archive.namelist())
        byteorder = archive.read(f"{prefix}byteorder").decode().strip() if f"{prefix}byteorder" in names \
            else "little"
        obj = _unpickle(io.BytesIO(archive.read(pickles[0])))
        return _resolve(obj, _zip_storages(archive, prefix, _storage_refs(obj)), byteorder)


def _read_legacy(path: Path) -> Any:
    with open(path, "rb") as stream:
        if _unpickle(stream) != LEGACY_MAGIC:
            raise CheckpointError("not a torch checkpoint (no zip archive, no legacy magic number)")
        if _unpickle(stream) != LEGACY_PROTOCOL:
            raise CheckpointError("unsupported legacy torch protocol version")
        info = _unpickle(stream)
        byteorder = "little" if not isinstance(info, dict) or info.get("little_endian", True) else "big"
        obj = _unpickle(stream)
        keys = _unpickle(stream)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise CheckpointError("malformed storage key list")
        kinds = {ref.key: ref.type for ref in _storage_refs(obj)}
        storages = {}
        for key in keys:
            if key not in kinds:
                raise CheckpointError(f"storage {key!r} is not used by any tensor")
            header = stream.read(8)
            if len(header) != 8:
                raise CheckpointError(f"truncated before storage {key!r}")
            (numel,) = struct.unpack("<q", header)
            dtype = np.dtype(kinds[key].dtype)
            data = stream.read(numel * dtype.itemsize)
            if numel < 0 or len(data) != numel * dtype.itemsize:
                raise CheckpointError(f"storage {key!r} is truncated")
            storages[key] = np.frombuffer(data, dtype=dtype)
        return _resolve(obj, storages, byteorder)


def read_checkpoint(path: str | Path) -> Any:
    """The object of a torch.save file (zip or legacy) with every tensor as a float32 numpy array; CheckpointError
    (one line naming the file) for anything else, a refused global included."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OverflowError, RecursionError, MemoryError, UnicodeDecodeError,
            struct.error) as error:
        text = " ".join(str(error).split()) or type(error).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({text[:200]})") from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot be read ({error.strerror or error})") from None


def read_upstream_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The ``{"unet": state_dict}`` of an upstream checkpoint as float32 arrays (export/weights.py's twin, without
    torch)."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or "unet" not in checkpoint:
        keys = list(checkpoint)[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: expected a dict with key 'unet' (upstream's format), got {keys}")
    state = checkpoint["unet"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: checkpoint['unet'] is {type(state).__name__}, expected a state_dict")
    for key, value in state.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{path}: state_dict entry {key!r} is {type(value).__name__}, expected a tensor")
    return dict(state)
