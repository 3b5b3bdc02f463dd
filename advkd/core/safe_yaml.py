"""The one YAML reader of advkd: presets, a run's ``config.yaml``, ``--set`` values.

Why not ``yaml.safe_load``: "safe" there only means no Python objects. A dozen lines of nested
aliases (billion laughs) expand to gigabytes, and a file of 100,000 ``[`` ends in a
RecursionError deep inside PyYAML's composer. advkd's YAML is small hand-written settings that
need neither, so :func:`load_yaml` refuses input over :data:`MAX_BYTES` before parsing, refuses
every anchor and alias (``&name`` / ``*name``) when it meets one, and stops at
:data:`MAX_DEPTH` levels of nesting while composing, long before Python's recursion limit.
Every problem is an :class:`~advkd.core.errors.AdvkdError` of one line naming the source (and
the line, where known).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from advkd.core.errors import AdvkdError

MAX_BYTES = 1 << 20  # 1 MiB: the largest shipped preset is ~5 KB, a run's config.yaml ~2 KB
MAX_DEPTH = 64  # nested mappings/sequences; shipped presets nest 4 deep


class UnsafeYaml(AdvkdError):
    """YAML refused for safety (size, anchors/aliases, depth), not for its syntax."""


def _line(mark: Any) -> str:
    return f" (line {mark.line + 1})" if mark is not None else ""


class _Loader(yaml.SafeLoader):
    """A SafeLoader that refuses anchors and aliases and counts nesting while composing."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise UnsafeYaml(f"{self.source} uses a YAML anchor or alias{_line(event.start_mark)}; advkd refuses them "
                             "(an alias can expand to gigabytes): write the value out")
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise UnsafeYaml(f"{self.source} nests deeper than {MAX_DEPTH} levels{_line(event.start_mark)}")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _read(path: Path, source: str) -> bytes:
    if path.stat().st_size > MAX_BYTES:
        raise UnsafeYaml(f"{source} is {path.stat().st_size} bytes; advkd reads YAML files of at most {MAX_BYTES} bytes (1 MiB)")
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)  # a FIFO or a growing file has no honest size
    if len(data) > MAX_BYTES:
        raise UnsafeYaml(f"{source} is over {MAX_BYTES} bytes; advkd reads YAML files of at most {MAX_BYTES} bytes (1 MiB)")
    return data


def load_yaml(text_or_path: str | bytes | Path, *, source: str) -> Any:
    """Parse one YAML document (a :class:`Path` is read, ``str``/``bytes`` parsed) with the limits above.

    ``source`` names the input in messages and is their subject: ``"preset my.yaml"`` gives
    ``preset my.yaml is not valid YAML (line 3): ...``. OSError from reading propagates.
    """
    raw = _read(text_or_path, source) if isinstance(text_or_path, Path) else text_or_path
    if isinstance(raw, bytes):
        if len(raw) > MAX_BYTES:
            raise UnsafeYaml(f"{source} is {len(raw)} bytes; advkd reads YAML of at most {MAX_BYTES} bytes (1 MiB)")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise AdvkdError(f"{source} is not a text file (not UTF-8)") from None
    elif len(raw) > MAX_BYTES or len(raw.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise UnsafeYaml(f"{source} is over {MAX_BYTES} bytes; advkd reads YAML of at most {MAX_BYTES} bytes (1 MiB)")
    loader = None
    try:
        loader = _Loader(raw, source)
        return loader.get_single_data()
    except yaml.reader.ReaderError as e:
        raise AdvkdError(f"{source} is not valid YAML: it holds the control character #x{e.character:02x} (at character {e.position})") from None
    except yaml.MarkedYAMLError as e:
        problem = " ".join(str(e.problem or e.context or type(e).__name__).split())
        raise AdvkdError(f"{source} is not valid YAML{_line(e.problem_mark or e.context_mark)}: {problem}") from None
    except yaml.YAMLError as e:
        raise AdvkdError(f"{source} is not valid YAML: {' '.join(str(e).split())}") from None
    except (ValueError, OverflowError) as e:  # a scalar PyYAML resolves but cannot build: a 5000-digit int, 2024-13-45
        problem = " ".join(str(e).split(";")[0].split())[:200]
        raise AdvkdError(f"{source} has a value advkd cannot read: {problem}") from None
    finally:
        if loader is not None:
            loader.dispose()
