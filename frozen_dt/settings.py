"""Settings as dataclasses, and command-line options made from them.

A field made with :func:`arg` carries its ``--flag`` help text and, with ``check``, the range its value must lie in
(:data:`CHECKS`, enforced by :func:`validate_fields`); :func:`add_arguments` turns a dataclass into argparse
options and records which were given on the command line (:func:`explicit_options`), so recipes fill only the
rest. The command configs (:mod:`frozen_dt.config`) and every algorithm's config are written this way.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import field

from frozen_dt.errors import FrozenDTError

# check= ranges a field's value must lie in (None always passes); checked by validate_fields
CHECKS = {
    "positive": (lambda v: v > 0, "must be positive"),
    "non_negative": (lambda v: v >= 0, "must not be negative"),
    "open_unit": (lambda v: 0 < v < 1, "must be in (0, 1)"),
    "fraction": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
}


def arg(default, help: str, *, check: str | None = None, **kwargs):
    """A dataclass field that becomes a command-line option; ``check`` names its range in :data:`CHECKS`.
    ``legacy=VALUE``: what runs saved before the setting existed used (their config.json lacks it)."""
    if check is not None and check not in CHECKS:
        raise ValueError(f"unknown check {check!r}")
    return field(default=default, metadata={"help": help, "check": check, **kwargs})


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate_fields(settings) -> None:
    """Every field with a ``check`` holds a value in its range, every field with ``choices`` one of them (or
    None)."""
    for f in dataclasses.fields(settings):
        check = f.metadata.get("check")
        value = getattr(settings, f.name)
        choices = f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise FrozenDTError(f"{flag_name(f.name)} must be one of {', '.join(map(str, choices))}, got {value!r}")
        if check and value is not None:
            ok, says = CHECKS[check]
            if not ok(value):
                raise FrozenDTError(f"{flag_name(f.name)} {says}, got {value}")


EXPLICIT = "explicit_options"  # namespace attribute: the dests of the options given on the command line


class _StoreExplicit(argparse.Action):
    """``store`` (or ``store_true`` with ``nargs=0``) that also records in ``namespace.explicit_options`` that the
    option was given, so that recipes fill only what the command line left out."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        setattr(namespace, EXPLICIT, getattr(namespace, EXPLICIT, frozenset()) | {self.dest})


def explicit_options(namespace: argparse.Namespace) -> frozenset:
    return getattr(namespace, EXPLICIT, frozenset())


def add_arguments(parser, cls) -> None:
    """Add one option (or positional) per field of dataclass ``cls`` to ``parser`` (or an argument group); options
    given are recorded (:func:`explicit_options`)."""
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        help_text = meta.pop("help")
        meta.pop("check", None)
        meta.pop("legacy", None)
        positional = meta.pop("positional", False)
        kwargs = {"help": help_text, **meta}
        is_flag = f.type in ("bool", bool)
        if is_flag:
            kwargs.update(nargs=0, const=True)
        elif "nargs" not in kwargs:
            kwargs["type"] = {"int": int, "float": float}.get(str(f.type), str)
        if positional:
            parser.add_argument(f.name, **kwargs)
        else:
            if f.default is not None and not is_flag:
                kwargs["help"] += f" (default: {f.default})"
            parser.add_argument(flag_name(f.name), dest=f.name, default=f.default, action=_StoreExplicit,
                                **kwargs)
            if is_flag:  # the off switch, for a flag that a recipe (or the default) turns on
                parser.add_argument("--no-" + flag_name(f.name)[2:], dest=f.name, default=argparse.SUPPRESS,
                                    action=_StoreExplicit, nargs=0, const=False,
                                    help=f"turn {flag_name(f.name)} off (a recipe may turn it on)")


def from_namespace(cls, namespace: argparse.Namespace):
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)}
    args = cls(**values)
    args.validate()
    return args
