"""Read a GGUF file's tensor table without loading tensors: which tensor types it holds.

MLX's GGUF reader fails on an unsupported tensor type with a message that names neither
the tensor nor the type; this scan lets the error say both.
"""

from __future__ import annotations

import struct
from pathlib import Path

GGML_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0",
              9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
              16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL",
              21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32",
              27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16"}
READABLE_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0")   # what mx.load reads

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Reader:
    def __init__(self, fh):
        self.fh = fh

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        data = self.fh.read(size)
        if len(data) != size:
            raise EOFError("the file ends inside its header")
        return struct.unpack(fmt, data)[0]

    def string(self) -> str:
        n = self.take("<Q")
        data = self.fh.read(n)
        if len(data) != n:
            raise EOFError("the file ends inside its header")
        return data.decode("utf-8", errors="replace")

    def skip_value(self, kind: int) -> None:
        if kind == _STRING:
            self.string()
        elif kind == _ARRAY:
            item, count = self.take("<I"), self.take("<Q")
            if item in _SCALARS:
                self.fh.seek(struct.calcsize(_SCALARS[item]) * count, 1)
            else:
                for _ in range(count):
                    self.skip_value(item)
        elif kind in _SCALARS:
            self.take(_SCALARS[kind])
        else:
            raise ValueError(f"unknown metadata value type {kind}")


def tensor_types(path: str | Path) -> dict[str, str]:
    """{tensor name: GGML type name} from the header; raises ValueError / EOFError on a bad file."""
    with open(path, "rb") as fh:
        reader = _Reader(fh)
        if fh.read(4) != b"GGUF":
            raise ValueError("it is not a GGUF file (no GGUF magic)")
        version = reader.take("<I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported")
        n_tensors, n_kv = reader.take("<Q"), reader.take("<Q")
        for _ in range(n_kv):
            reader.string()
            reader.skip_value(reader.take("<I"))
        types = {}
        for _ in range(n_tensors):
            name = reader.string()
            dims = reader.take("<I")
            fh.seek(8 * dims, 1)
            kind = reader.take("<I")
            reader.take("<Q")   # data offset
            types[name] = GGML_TYPES.get(kind, f"type {kind}")
        return types


def unreadable_tensor(path: str | Path) -> tuple[str, str] | None:
    """(tensor name, type name) of the first tensor MLX cannot read, or None."""
    try:
        types = tensor_types(path)
    except (ValueError, EOFError, OSError):
        return None
    for name, kind in types.items():
        if kind not in READABLE_TYPES:
            return name, kind
    return None
