"""Reading a CIFAR-10/100 python batch file without running code.

The CIFAR archives are pickles; :class:`_CifarUnpickler` admits only the globals a genuine batch
file uses (numpy's array reconstruction and the latin-1 bytes encoder), so a crafted file in a
data folder is refused by name instead of executing. Any malformation is an :class:`AdvkdError`.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from advkd.core.errors import AdvkdError

__all__ = ["read_cifar_pickle"]


def _get(d: dict, key: str):
    """Look a key up as bytes (Python-2 pickles read with encoding='bytes') or as str."""
    if key.encode() in d:
        return d[key.encode()]
    return d[key]


class _Refused(pickle.UnpicklingError):
    """A CIFAR file asked for a global outside :func:`_cifar_globals`."""


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, and nothing more."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _plain_dtype(*args):
    """``numpy.dtype`` without object dtypes (an object array would unpickle arbitrary objects)."""
    import numpy as np

    dt = np.dtype(*args)
    if dt.hasobject:
        raise _Refused(f"numpy.dtype({args[0]!r}) (an object dtype)")
    return dt


def _cifar_globals() -> dict[tuple[str, str], object]:
    """Every global a CIFAR-10/100 python batch file may reference: numpy's array reconstruction
    (its numpy 1 and numpy 2 module names) and, for files re-written by Python 3 with protocol 2,
    the latin-1 bytes encoder. Genuine files hold dicts, lists, str/bytes, ints and one uint8 array."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import _reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _plain_dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }


class _CifarUnpickler(pickle.Unpickler):
    """Loads data, never code: ``find_class`` admits only :func:`_cifar_globals`."""

    def __init__(self, file, **kwargs) -> None:
        super().__init__(file, **kwargs)
        self._allowed = _cifar_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise _Refused(f"persistent id {str(pid)[:40]!r}")


def read_cifar_pickle(path: Path, label_key: str, num_classes: int, title: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR pickle -> (uint8 (n, 3, 32, 32), int64 (n,)); any malformation -> AdvkdError.

    Read with :class:`_CifarUnpickler`, so a crafted file cannot run code: anything that is not
    a plain CIFAR batch (dicts, lists, str/bytes, ints, numpy arrays) is refused by name.
    """
    import numpy as np

    if not path.is_file():
        raise AdvkdError(
            f"{title} file missing: {path}; the folder is incomplete — remove it and pass --download, "
            f"or point --data-dir / ADVKD_DATA_DIR at a complete copy"
        )
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
        if not isinstance(d, dict):
            raise TypeError(f"expected a dict, got {type(d).__name__}")
        data = np.asarray(_get(d, "data"), dtype=np.uint8)
        labels = np.asarray(_get(d, label_key), dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
            raise ValueError(f"data shape {data.shape}, labels shape {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"labels outside [0, {num_classes})")
    except AdvkdError:
        raise
    except _Refused as exc:
        raise AdvkdError(f"{title} file {path} is not a CIFAR batch file: it references {exc}; refusing to load it "
                         f"(remove the folder and pass --download, or use a genuine copy)") from None
    except Exception as exc:  # UnpicklingError, EOFError, KeyError, TypeError, ValueError, OSError, ...
        detail = (str(exc).splitlines() or [""])[0][:200]
        raise AdvkdError(f"{title} file {path} is corrupt or unreadable ({type(exc).__name__}: {detail}); "
                         f"remove the folder and pass --download") from exc
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32))
    return images, torch.from_numpy(labels)
