"""The public API documents itself (issue 16: "type hints and docstrings
throughout"): every name herd and herd.aio export, and every public method
and property of their classes, has a docstring and annotated parameters."""

import inspect

import herd
import herd.aio


def _exported():
    for mod in (herd, herd.aio):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if not inspect.ismodule(obj):
                yield f"{mod.__name__}.{name}", obj


def _members(cls):
    """The public methods and properties herd's own classes give ``cls``."""
    for name, static in inspect.getmembers_static(cls) if hasattr(inspect, "getmembers_static") \
            else ((n, inspect.getattr_static(cls, n)) for n in dir(cls)):
        if name.startswith("_"):
            continue
        fn = static.__func__ if isinstance(static, (classmethod, staticmethod)) else static
        if isinstance(fn, property) or (inspect.isfunction(fn)
                                        and fn.__module__.startswith("herd")):
            yield f"{cls.__qualname__}.{name}", fn


def _problems(name, obj):
    target = obj.fget if isinstance(obj, property) else obj
    if not inspect.getdoc(obj):
        yield f"{name}: no docstring"
    if not callable(target) or inspect.isclass(target):
        return
    sig = inspect.signature(target)
    for p in sig.parameters.values():
        if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty:
            yield f"{name}: parameter {p.name} has no type hint"
    if sig.return_annotation is inspect.Signature.empty:
        yield f"{name}: no return type hint"


def test_every_public_name_has_docstring_and_type_hints():
    problems, checked = [], set()
    for name, obj in _exported():
        problems += _problems(name, obj)
        if inspect.isclass(obj):
            for member, fn in _members(obj):
                if id(fn) not in checked:
                    checked.add(id(fn))
                    problems += _problems(member, fn)
    assert len(checked) > 50
    assert problems == []
