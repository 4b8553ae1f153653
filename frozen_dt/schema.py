"""The one check every file the library reads back goes through: a schema of field names and types.

A schema is built from the small checkers below (``record``, ``list_of``, ``integer``, ``plain_name``...); each
takes a value and the dotted name of its field and returns the value, or raises. :func:`validate` turns the first
problem into one :class:`~frozen_dt.errors.FrozenDTError` naming the file and the field::

    MANIFEST = record({"env": text(), "checkpoints": list_of(record({"file": plain_name(), "steps": integer(0)}))})
    manifest = validate(json.loads(text), MANIFEST, path)   # "policies/hopper/manifest.json: checkpoints[3].file: ..."

Records accept fields they do not name (files written by newer versions); every named field is checked. A field
that names a file is a :func:`plain_name` (one path component: it resolves inside the folder of the file that
names it); a commit is a full hexadecimal hash; numbers are finite.
"""

from __future__ import annotations

import math
import re
from typing import Callable

from frozen_dt.errors import FrozenDTError

Check = Callable[[object, str], object]

PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_NAME_BYTES = 255  # a path component on every common filesystem


class Invalid(Exception):
    """A value that does not fit its field (``field``: its dotted name)."""

    def __init__(self, field: str, why: str):
        super().__init__(f"{field or 'the top level'}: {why}")
        self.field, self.why = field, why


def validate(value, schema: Check, source) -> object:
    """``value`` checked against ``schema``; the first misfit raises one message naming ``source`` and the field."""
    try:
        return schema(value, "")
    except Invalid as error:
        raise FrozenDTError(f"{source}: {error}") from None


def _show(value) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _join(field: str, key) -> str:
    return f"{field}[{key}]" if isinstance(key, int) else (f"{field}.{key}" if field else str(key))


def integer(minimum: int | None = None, maximum: int | None = None) -> Check:
    """An int (not a bool, not a float) within ``[minimum, maximum]``."""
    def check(value, field):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(field, f"must be an integer, got {_show(value)}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise Invalid(field, f"must be {bounds}, got {value}")
        return value
    return check


def number() -> Check:
    """A finite int or float (not a bool, not a string, not NaN or infinity)."""
    def check(value, field):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(field, f"must be a number, got {_show(value)}")
        if not math.isfinite(value):
            raise Invalid(field, f"must be a finite number, got {value}")
        return value
    return check


def text(max_len: int = 4096) -> Check:
    def check(value, field):
        if not isinstance(value, str):
            raise Invalid(field, f"must be a string, got {_show(value)}")
        if len(value) > max_len:
            raise Invalid(field, f"is longer than {max_len} characters")
        return value
    return check


def flag() -> Check:
    def check(value, field):
        if not isinstance(value, bool):
            raise Invalid(field, f"must be true or false, got {_show(value)}")
        return value
    return check


def choice(*allowed) -> Check:
    def check(value, field):
        if isinstance(value, bool) or value not in allowed:
            raise Invalid(field, f"must be one of {', '.join(map(str, allowed))}, got {_show(value)}")
        return value
    return check


def is_plain_name(value) -> bool:
    """One path component of safe characters, no '..', at most :data:`MAX_NAME_BYTES` bytes."""
    return (isinstance(value, str) and PLAIN_NAME.fullmatch(value) is not None and ".." not in value
            and len(value.encode()) <= MAX_NAME_BYTES)


def plain_name() -> Check:
    """A file name that resolves inside its own folder: no '/', no '..', no leading '-' or '.'."""
    def check(value, field):
        if not is_plain_name(value):
            raise Invalid(field, f"must be a plain file name (letters, digits, '.', '_', '-'; no '/' or '..'), "
                                 f"got {_show(value)}")
        return value
    return check


def relative_path() -> Check:
    """A relative path of plain names (``envs/policies/hopper/resume/sac_model.zip``): nothing leaves its root."""
    def check(value, field):
        if not isinstance(value, str) or not value or not all(is_plain_name(p) for p in value.split("/")):
            raise Invalid(field, f"must be a relative path of plain names, got {_show(value)}")
        return value
    return check


def hex_hash(length: int) -> Check:
    """A full lowercase hexadecimal hash of ``length`` digits (a git commit: 40; a SHA-256: 64)."""
    pattern = re.compile(f"[0-9a-f]{{{length}}}")

    def check(value, field):
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise Invalid(field, f"must be a {length}-digit hexadecimal hash, got {_show(value)}")
        return value
    return check


def nullable(inner: Check) -> Check:
    return lambda value, field: None if value is None else inner(value, field)


def either(*options: Check) -> Check:
    """The first option the value fits; else the first option's complaint."""
    def check(value, field):
        first = None
        for option in options:
            try:
                return option(value, field)
            except Invalid as error:
                first = first or error
        raise first
    return check


def list_of(item: Check, max_len: int | None = None) -> Check:
    def check(value, field):
        if not isinstance(value, list):
            raise Invalid(field, f"must be a list, got {_show(value)}")
        if max_len is not None and len(value) > max_len:
            raise Invalid(field, f"has {len(value)} entries, at most {max_len} are allowed")
        return [item(v, _join(field, i)) for i, v in enumerate(value)]
    return check


def mapping_of(value_check: Check, key_check: Check | None = None) -> Check:
    """A mapping whose every value fits ``value_check`` (and key ``key_check``, default: any string)."""
    key_check = key_check or text(200)

    def check(value, field):
        if not isinstance(value, dict):
            raise Invalid(field, f"must be a mapping, got {_show(value)}")
        for key in value:
            key_check(key, _join(field, key))
        return {k: value_check(v, _join(field, k)) for k, v in value.items()}
    return check


def record(required: dict[str, Check], optional: dict[str, Check] | None = None) -> Check:
    """A mapping with the ``required`` fields and, when present, the ``optional`` ones (each checked); other fields
    pass unchecked."""
    optional = optional or {}

    def check(value, field):
        if not isinstance(value, dict):
            raise Invalid(field, f"must be a mapping, got {_show(value)}")
        for name, inner in required.items():
            if name not in value:
                raise Invalid(_join(field, name), "is missing")
            inner(value[name], _join(field, name))
        for name, inner in optional.items():
            if name in value:
                inner(value[name], _join(field, name))
        return value
    return check
