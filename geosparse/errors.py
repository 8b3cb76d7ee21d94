"""Errors about the user's input, and how `torchgeo fit` reports them.

:class:`InputError` marks a message written for the user: it names the file or
parameter and the fix. geosparse's own command line prints it as one line. Under
``torchgeo fit``, LightningCLI lets the exception escape with its traceback (about 75
lines of jsonargparse and Lightning frames around the message); :func:`install_cli_hook`
makes that process print ``torchgeo: error: MESSAGE`` instead, and only for these
errors: any other exception keeps its full traceback.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import TracebackType

__all__ = [
    'InputError',
    'check_counts',
    'check_number',
    'input_error_in',
    'install_cli_hook',
]


class InputError(ValueError):
    """Bad input from the user; the message names the file or parameter and the fix.

    .. versionadded:: 0.1
    """


def check_number(
    owner: str,
    name: str,
    value: object,
    minimum: float,
    *,
    integer: bool = False,
    strict: bool = False,
) -> None:
    """Refuse a parameter that is not a finite number ``>= minimum`` (``>`` if strict).

    ``None`` passes (the parameter's default). Sizes and counts (``integer``) must
    be whole numbers.

    .. versionadded:: 0.8

    Raises:
        InputError: naming ``owner`` and ``name``, the value and the range.
    """
    if value is None:
        return
    kind = 'a whole number' if integer else 'a number'
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    number = float(value) if ok else math.nan  # type: ignore[arg-type]
    ok = math.isfinite(number) and (not integer or number.is_integer())
    ok = ok and (number > minimum if strict else number >= minimum)
    if not ok:
        bound = f'> {minimum:g}' if strict else f'>= {minimum:g}'
        raise InputError(f'{owner}: {name}={value!r} must be {kind} {bound}.')


def check_counts(owner: str, patch_size: object = None, **counts: object) -> None:
    """Refuse a window size or count below 1 (:func:`check_number`, whole numbers).

    ``patch_size`` may be one side or a pair (rows, cols); ``None`` passes.

    .. versionadded:: 0.8

    Raises:
        InputError: naming ``owner`` and the parameter.
    """
    sides = patch_size if isinstance(patch_size, list | tuple) else [patch_size]
    for side in sides:
        check_number(owner, 'patch_size', side, 1, integer=True)
    for name, value in counts.items():
        check_number(owner, name, value, 1, integer=True)


def input_error_in(exc: BaseException | None) -> InputError | None:
    """The first :class:`InputError` in an exception's chain of causes, if any.

    .. versionadded:: 0.1
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, InputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def install_cli_hook() -> None:
    """In a ``torchgeo`` command-line process, print input errors as one line.

    Does nothing in any other process (a notebook, a script, the tests), so that
    importing geosparse never changes how a user's own program reports errors.

    .. versionadded:: 0.1
    """
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    if argv0.name != 'torchgeo' and argv0.parent.name != 'torchgeo':
        return
    previous = sys.excepthook

    def hook(
        kind: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        found = input_error_in(exc)
        if found is None:
            previous(kind, exc, tb)
            return
        print(f'torchgeo: error: {found}', file=sys.stderr)

    sys.excepthook = hook
