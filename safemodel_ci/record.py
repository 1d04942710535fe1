"""A small base for plain record classes: what the project's dataclasses gave, without ``dataclasses``.

Importing :mod:`dataclasses` imports ``inspect``, ``ast``, ``dis`` and ``tokenize`` (about 6 ms, a
fifth of the interpreter's own start), and creating each dataclass compiles its methods from source
text (0.2-0.8 ms a class): together about 12 ms of every ``safemodel scan`` and pre-commit run on a
small model, most of what separates them from the bare interpreter (issue 20, "the hook's start").

A record class lists its fields as ``__slots__`` (in order) and writes its own ``__init__`` (defaults,
default factories and any checks in plain code). :class:`Record` derives from the slots, once per
class, the methods a dataclass would have:

- ``__repr__``: ``Name(field=value, ...)``, leaving out the fields in ``_repr_skip``
  (``field(repr=False)``);
- ``__eq__``: same class and equal fields, but those in ``_compare_skip`` (``field(compare=False)``),
  ``NotImplemented`` otherwise, as a dataclass's;
- with ``frozen=True`` in the class statement: assignment and deletion raise
  ``dataclasses.FrozenInstanceError`` (an ``AttributeError``; ``dataclasses`` is imported only to
  raise it), and ``__hash__`` hashes the fields; otherwise ``__hash__`` is None (mutable, compared by
  value), as for ``@dataclass`` and ``@dataclass(frozen=True)``;
- :meth:`Record.replace` (``dataclasses.replace``: a new object through ``__init__``, which is not
  given the fields in ``_init_skip``, ``field(init=False)``: ``__init__`` sets those itself),
  :meth:`Record.as_dict` (``dataclasses.asdict``) and :meth:`Record.field_names`
  (``dataclasses.fields``' names);
- pickling (worker processes, ``copy``) that restores the fields without calling ``__init__``, as a
  dataclass's does, frozen or not.

Slots also make each object smaller and its attributes faster than a ``__dict__``; a record takes no
attribute outside its fields.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    # (typing.TypeVar's bound "Record" would be compiled at import: the process's first compile(),
    # ~1.5 ms of start-up.)
    from typing import Any, Dict, FrozenSet, Tuple, Type, TypeVar

    R = TypeVar("R", bound="Record")


def _frozen_error(name: str, what: str) -> AttributeError:
    # The error dataclasses raise, so callers and tests that catch it keep working; imported only here.
    from dataclasses import FrozenInstanceError

    return FrozenInstanceError(f"cannot {what} field {name!r}")


def _restore(cls: Type[R], values: Tuple[Any, ...]) -> R:
    """Unpickle: the fields as they were, without ``__init__`` (a frozen record too)."""
    obj = object.__new__(cls)
    for name, value in zip(cls._fields, values):
        object.__setattr__(obj, name, value)
    return obj


def _as_plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.as_dict()
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple, rebuilt field by field
        return type(value)(*(_as_plain(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_as_plain(v) for v in value)
    if isinstance(value, dict):
        return type(value)((_as_plain(k), _as_plain(v)) for k, v in value.items())
    return value


class Record:
    """Base of the plain record classes; see the module's docstring."""

    __slots__ = ()
    #: Every field, in order: the ``__slots__`` of the class and its bases, bases first.
    _fields: Tuple[str, ...] = ()
    #: Fields ``__repr__`` leaves out (``field(repr=False)``).
    _repr_skip: FrozenSet[str] = frozenset()
    #: Fields ``__eq__`` and ``__hash__`` leave out (``field(compare=False)``).
    _compare_skip: FrozenSet[str] = frozenset()
    #: Fields ``__init__`` does not take (``field(init=False)``): :meth:`replace` does not pass them.
    _init_skip: FrozenSet[str] = frozenset()
    #: The fields ``__eq__`` and ``__hash__`` compare (``_fields`` but ``_compare_skip``).
    _compared: Tuple[str, ...] = ()
    _frozen = False

    def __init_subclass__(cls, frozen: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = []
        for klass in reversed(cls.__mro__):
            slots = klass.__dict__.get("__slots__", ())
            names.extend((slots,) if isinstance(slots, str) else slots)
        cls._fields = tuple(names)
        cls._compared = tuple(n for n in names if n not in cls._compare_skip)
        if cls._frozen:
            pass  # a subclass of a frozen record is frozen, the base's methods apply (as for dataclasses)
        elif frozen:
            cls._frozen = True
            cls.__setattr__ = Record._no_setattr  # type: ignore[method-assign,assignment]
            cls.__delattr__ = Record._no_delattr  # type: ignore[method-assign,assignment]
            if "__hash__" not in cls.__dict__:
                cls.__hash__ = Record._hash  # type: ignore[method-assign,assignment]
        elif "__hash__" not in cls.__dict__:
            cls.__hash__ = None  # type: ignore[assignment]  # mutable and compared by value

    def _no_setattr(self, name: str, value: Any) -> None:
        raise _frozen_error(name, "assign to")

    def _no_delattr(self, name: str) -> None:
        raise _frozen_error(name, "delete")

    def _values(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def _compared_values(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._compared)

    def _hash(self) -> int:
        return hash(self._compared_values())

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._compared_values() == other._compared_values()  # type: ignore[attr-defined]
        return NotImplemented

    def __repr__(self) -> str:
        skip = self._repr_skip
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields if name not in skip)
        return f"{type(self).__qualname__}({inner})"

    def __reduce__(self) -> Tuple[Any, ...]:
        return _restore, (type(self), self._values())

    def replace(self: R, **changes: Any) -> R:
        """A new record with ``changes``, the other fields as they are, made by ``__init__`` (so its
        checks and derived fields apply), as ``dataclasses.replace``."""
        unknown = set(changes) - set(self._fields) | set(changes) & self._init_skip
        if unknown:
            raise TypeError(f"{type(self).__name__}: no field {sorted(unknown)[0]!r} to replace")
        values = {name: getattr(self, name) for name in self._fields if name not in self._init_skip}
        values.update(changes)
        return type(self)(**values)

    def as_dict(self) -> Dict[str, Any]:
        """The fields as a dict, records, lists, tuples and dicts inside converted too (as
        ``dataclasses.asdict``; other values are not copied)."""
        return {name: _as_plain(getattr(self, name)) for name in self._fields}

    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        """The names of the fields, in order (``dataclasses.fields``' names)."""
        return cls._fields


__all__ = ["Record"]
