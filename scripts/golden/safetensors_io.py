"""Minimal safetensors reader/writer for Debian's python3 (torch 1.13, no `safetensors` package).

Format: 8-byte little-endian header length N, N bytes of JSON header
({"name": {"dtype", "shape", "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}),
then the raw little-endian tensor data; offsets are relative to the end of the header.
The header is padded with spaces to a multiple of 8 bytes so the data stays aligned.
Tensors are stored in the order given (GpuTransformer's C# reader accepts any order).
"""

import json
import os
import struct
import tempfile

import numpy as np
import torch

_DTYPES = {
    torch.float32: ("F32", "<f4"),
    torch.float64: ("F64", "<f8"),
    torch.int64: ("I64", "<i8"),
    torch.int32: ("I32", "<i4"),
    torch.uint8: ("U8", "u1"),
    torch.bool: ("BOOL", "u1"),
}
_BY_NAME = {name: (dtype, numpy_type) for dtype, (name, numpy_type) in _DTYPES.items()}


def save_file(tensors, path, metadata=None):
    """Writes `tensors` (a dict name -> torch.Tensor, in insertion order) atomically."""
    if "__metadata__" in tensors:
        raise ValueError("'__metadata__' cannot name a tensor")
    header = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("safetensors metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    blobs = []
    offset = 0
    for name, tensor in tensors.items():
        if tensor.dtype not in _DTYPES:
            raise TypeError(f"tensor '{name}' has unsupported dtype {tensor.dtype}")
        dtype_name, numpy_type = _DTYPES[tensor.dtype]
        array = tensor.detach().cpu().contiguous().numpy()
        if tensor.dtype == torch.bool:
            array = array.astype(np.uint8)
        blob = np.ascontiguousarray(array.astype(numpy_type, copy=False)).tobytes()
        header[name] = {"dtype": dtype_name, "shape": list(tensor.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(struct.pack("<Q", len(header_bytes)))
            stream.write(header_bytes)
            for blob in blobs:
                stream.write(blob)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def load_file(path):
    """Reads a file: returns (dict name -> torch.Tensor in file order of offsets, metadata dict)."""
    with open(path, "rb") as stream:
        data = stream.read()
    if len(data) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (length,) = struct.unpack_from("<Q", data, 0)
    if length < 2 or 8 + length > len(data):
        raise ValueError(f"{path}: header length {length} out of range")
    header = json.loads(data[8 : 8 + length].decode("utf-8"))
    metadata = header.pop("__metadata__", {}) or {}
    body = memoryview(data)[8 + length :]
    tensors = {}
    end_of_previous = 0
    for name, entry in sorted(header.items(), key=lambda item: tuple(item[1]["data_offsets"])):
        begin, end = entry["data_offsets"]
        dtype, numpy_type = _BY_NAME[entry["dtype"]]
        shape = entry["shape"]
        count = 1
        for size in shape:
            count *= size
        if begin != end_of_previous or end - begin != count * np.dtype(numpy_type).itemsize or end > len(body):
            raise ValueError(f"{path}: tensor '{name}' has bad data_offsets {entry['data_offsets']}")
        array = np.frombuffer(body[begin:end], dtype=numpy_type).reshape(shape).copy()
        tensor = torch.from_numpy(array)
        tensors[name] = tensor.bool() if dtype == torch.bool else tensor
        end_of_previous = end
    if end_of_previous != len(body):
        raise ValueError(f"{path}: {len(body) - end_of_previous} bytes after the last tensor")
    return tensors, metadata

