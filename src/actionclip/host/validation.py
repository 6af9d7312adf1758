"""One way to check settings that people write by hand (experiment configs, model lists, checkpoints' config.json):
pydantic models with ``extra="forbid"``, and a mistake reported as one line, ``FILE: KEY.PATH: what is wrong``.

``Flag``, ``Integer`` and ``Number`` are YAML's scalars as the configs take them: lax pydantic would read ``"off"`` as
false and ``true`` as 1, which in a hand-written file are mistakes, while ``5e-6`` (a string to PyYAML, which wants a
dot) must stay a number.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Strict, ValidationError
from pydantic_core import PydanticCustomError
from typing_extensions import is_typeddict  # typing's misses typing_extensions' TypedDicts before Python 3.12


def _no_flag(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("bool_for_number", "a flag where a number belongs")
    return value


Flag = Annotated[bool, Strict()]
Integer = Annotated[int, BeforeValidator(_no_flag)]
Number = Annotated[float, BeforeValidator(_no_flag)]
# A section written with every key commented out is YAML null: it means the defaults, as an empty mapping does.
EMPTY_IS_DEFAULT = BeforeValidator(lambda value: {} if value is None else value)

_WORDS = {
    bool: ("true or false", "flags"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    type(None): ("null", "nulls"),
}
_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}


def _bare(hint: Any) -> Any:
    while typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    return hint


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _inner(hint: Any, part: str | int) -> Any:
    """The type at ``part`` (a key or an index) of ``hint``; None where ``part`` is pydantic's name of a union's
    member, which is no key of the file."""
    hint, origin = _bare(hint), typing.get_origin(_bare(hint))
    if _is_union(hint):
        return next((t for t in (_inner(member, part) for member in typing.get_args(hint)) if t is not None), None)
    if isinstance(part, int):
        return typing.get_args(hint)[0] if origin in (list, tuple) else None  # the tuples here hold one type
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return hint.model_fields[part].annotation if part in hint.model_fields else None
    if is_typeddict(hint):
        return typing.get_type_hints(hint).get(part)
    return typing.get_args(hint)[1] if origin is dict else None


def _resolve(model: type, loc: tuple) -> tuple[tuple, Any]:
    """The keys of the file in ``loc`` (pydantic's names of a union's members left out), and the type there."""
    hint, path = model, ()
    for part in loc:
        inner = _inner(hint, part)
        if inner is not None:
            hint, path = inner, (*path, part)
        elif not _is_union(_bare(hint)):
            break
    return path, hint


def _keys(hint: Any) -> list[str]:
    hint = _bare(hint)
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return sorted(hint.model_fields)
    return sorted(typing.get_type_hints(hint)) if is_typeddict(hint) else []


def _expected(hint: Any, plural: bool = False) -> str:
    hint = _bare(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_union(hint):
        return " or ".join(_expected(member, plural) for member in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(arg) for arg in args)
    if origin is tuple and args[-1] is not Ellipsis:
        return f"{'two' if len(args) == 2 else len(args)} {_expected(args[0], True)}"
    if origin in (list, tuple):
        return f"a list of {_expected(args[0], True)}"
    if hint in _WORDS:
        return _WORDS[hint][plural]
    return "mappings" if plural else "a mapping"


def _nested(one: tuple, other: tuple) -> bool:
    """Whether one key path holds the other, as where a union's members fail at a value and inside it."""
    return one[: len(other)] == other or other[: len(one)] == one


def _rank(problem: dict) -> int:
    # Unknown keys first (a misspelt key also shows as a missing one), then broken bounds and the models' own checks,
    # which say more than the members of a union whose type the value does not have.
    return 0 if problem["type"] == "extra_forbidden" else 1 if problem["type"] in (*_BOUNDS, "value_error") else 2


def error_line(error: ValidationError, source: str, model: type) -> str:
    """``error`` (from validating ``model``) as one line, ``SOURCE: KEY.PATH: what is wrong``, for its first problem:
    all the unknown (or missing) keys of one section together, a union's failed members as one problem."""
    problems = sorted(error.errors(include_url=False), key=_rank)
    first = problems[0]
    keyed = ("extra_forbidden", "missing")
    if first["type"] in keyed:
        path, hint = _resolve(model, first["loc"][:-1])
        same = [p for p in problems if p["type"] == first["type"] and _resolve(model, p["loc"][:-1])[0] == path]
        names = ", ".join(str(p["loc"][-1]) for p in same)
        what = (
            f"unknown key(s) {names}; known: {', '.join(_keys(hint))}" if first["type"] == "extra_forbidden" else f"missing key(s) {names}"
        )
    else:
        path, hint = _resolve(model, first["loc"])
        same = [p for p in problems if p["type"] not in keyed and _nested(_resolve(model, p["loc"])[0], path)]
        if first["type"] == "value_error":  # the words of the model's own checks
            what = str(first["ctx"]["error"])
        elif first["type"] in _BOUNDS:
            symbol, bound = _BOUNDS[first["type"]]
            what = f"must be {symbol} {first['ctx'][bound]}, got {first['input']!r}"
        else:
            what = f"expected {_expected(hint)}, got {first['input']!r}"
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")
    more = len(problems) - len(same)
    return f"{source}: {key + ': ' if key else ''}{what}" + (f" (and {more} more)" if more else "")
