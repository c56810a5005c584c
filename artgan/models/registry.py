"""One registry of network classes, filled by subclassing ``artgan.models.base.Generator`` / ``Discriminator``.

Checkpoints name their generator by class path (``artgan.models.dcgan.DCGANGenerator``); ``resolve`` turns such
a name back into a class. Only registered classes are returned: a name that is not a registered subclass of
the part's base class is refused, so a checkpoint cannot make ``generate.py`` build an arbitrary object. A
class path whose module is not imported yet is imported first (a model defined in a user's own package).
"""

from __future__ import annotations

import importlib

_CLASSES: dict[str, dict[str, type]] = {"generator": {}, "discriminator": {}}


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(kind: str, cls: type) -> None:
    _CLASSES[kind][class_path(cls)] = cls
    legacy = getattr(cls, "legacy_name", None)
    if legacy and legacy not in _CLASSES[kind]:
        _CLASSES[kind][legacy] = cls


def registered(kind: str) -> list[str]:
    return sorted(_CLASSES[kind])


def resolve(kind: str, name: str) -> type:
    """The registered ``kind`` class called ``name`` (a class path or a format-1 short name)."""
    if name not in _CLASSES[kind] and isinstance(name, str) and "." in name:
        module = name.rsplit(".", 1)[0]
        while module and name not in _CLASSES[kind]:
            try:
                importlib.import_module(module)
                break
            except ImportError:
                module = module.rsplit(".", 1)[0] if "." in module else ""  # nested class: Outer.Inner
    if name not in _CLASSES[kind]:
        raise ValueError(f"unknown {kind} {name!r}; registered: {', '.join(registered(kind))}")
    return _CLASSES[kind][name]


def build(kind: str, spec: dict):
    """Rebuild a network from its ``spec()``: ``{"class": path, "kwargs": {...}}`` (format 1: ``"name"``)."""
    name = spec.get("class", spec.get("name"))
    return resolve(kind, name)(**spec.get("kwargs", {}))
