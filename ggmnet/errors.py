"""User-facing errors: one clear line, exit status 2, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., int | None])

#: Exit status for bad input, as argparse uses for bad flags.
EXIT_USAGE = 2


class UserError(Exception):
    """Bad input from the user: a file, an option or a value that is not what was expected.

    The message is one line that names the file or option and says what was expected.
    Command-line entry points print it as ``<prog>: error: <message>`` and exit with status 2.
    """


def one_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a one-line error quotes."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def cli_entry(func: F) -> F:
    """Wrap a console-script ``main`` so a :class:`UserError` becomes one line on stderr and exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as err:
            prog = sys.argv[0].rsplit("/", 1)[-1] or "ggmnet"
            print(f"{prog}: error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            print("interrupted; the last checkpoint is kept, rerun with --resume to continue", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
