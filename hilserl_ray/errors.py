"""One error policy for every command: a user error is a few lines and exit 2, a bug a traceback.

A `UserError` says what is wrong, where (a dotted config key or a file) and the fix. Every
command's `main` is wrapped by `@command`: a user error prints its message on stderr and returns
`EXIT_USER` (2) without a traceback (`--debug` or HILSERL_DEBUG=1 adds it); Ctrl+C returns 130
quietly; anything else is a bug and keeps its traceback. A file the OS refuses this user (a
`PermissionError` naming it) is a user error too: its owner and mode are the user's to fix. A user
error raised inside a Ray actor reaches the user as the same message: `user_error` unwraps Ray's
wrappers.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from hilserl_ray.fsutil import unwritable

EXIT_OK, EXIT_FAILED, EXIT_USER, EXIT_INTERRUPTED = 0, 1, 2, 130
DEBUG_ENV = "HILSERL_DEBUG"


class UserError(Exception):
    """A problem the user can fix: bad config, dataset, checkpoint, calibration, device, resources.

    `what` says what is wrong, `where` names the dotted key or file, `fix` what to do about it."""

    exit_code = EXIT_USER

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(what)

    def message(self) -> str:
        head = f"{self.where}: {self.what}" if self.where else self.what
        return f"{head}\n  fix: {self.fix}" if self.fix else head

    def __str__(self) -> str:
        return self.message()

    def __reduce__(self):  # subclasses keep their own fields across Ray's pickling
        return _rebuild, (type(self), self.__dict__.copy(), self.args)


def _rebuild(cls: type, state: dict, args: tuple) -> UserError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class Problem(NamedTuple):
    """One thing a check found wrong: the key (or file) it is about, what was found, the fix."""

    key: str
    found: object
    fix: str

    def line(self) -> str:
        """`key: got found; fix`; a `HINT` is its text alone."""
        return self.fix if self.key == HINT else f"{self.key}: got {self.found!r}; {self.fix}"


HINT = "hint"  # a Problem with this key is advice printed as is (no key, no value)


class ConfigError(UserError):
    """One or more problems in the configuration (or command line), each a line naming the field."""

    def __init__(self, source: str, lines: list[str]):
        self.source = source
        self.lines = list(lines)
        super().__init__(self.message(), where=source)

    @classmethod
    def of(cls, source: str, problems: Iterable[tuple[str, object, str]]) -> ConfigError:
        """The one way problems become the user's error: a line per problem, in order."""
        return cls(source, [Problem(*p).line() for p in problems])

    def message(self) -> str:
        n = len(self.lines)
        head = f"{n} problem{'s' if n != 1 else ''} in the configuration ({self.source}):"
        return "\n".join([head, *(f"  - {line}" for line in self.lines)])


class InvalidConfig(ConfigError, ValueError):
    """Problems in a config built in code (not loaded by `configio`): a user error, and a
    `ValueError` as the schema's own field errors are."""


def user_error(exc: BaseException | None) -> UserError | None:
    """The `UserError` behind `exc`: itself, or the one Ray (task/actor errors) or `raise from` wraps;
    a file the OS refused this user (`PermissionError` naming it) is one too, see `permission_denied`."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)  # RayTaskError, ActorDiedError(creation task failed)
        if isinstance(cause, BaseException) and cause is not exc:
            inner = user_error(cause)
            if inner is not None:
                return inner
        if isinstance(exc, UserError):
            return exc
        if isinstance(exc, PermissionError) and exc.filename:
            return permission_denied(exc)
        exc = exc.__cause__ or exc.__context__
    return None


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# Rust writers (safetensors) raise their own error type; its text carries the OS error number.
NO_SPACE_TEXT = tuple(f"(os error {n})" for n in NO_SPACE)


class DiskFull(UserError):
    """No space left (or over quota) where a run writes: the run stops with this one line (exit 2).

    What was committed before stays as it was (the replay store's last commit, the newest complete
    checkpoint), so `--resume` goes on from there once there is room."""

    def __init__(self, directory: str | Path, doing: str):
        self.directory, self.doing = str(directory), doing
        super().__init__(
            f"the disk is full (no space left while {doing})",
            where=self.directory,
            fix="free space on it, or point output_dir to another disk (with the run's directory "
            "copied there), then run again with --resume",
        )

    def message(self) -> str:
        return f"{self.where}: {self.what}; {self.fix}"


def no_space(e: BaseException | None) -> bool:
    """Did `e` (or what it was raised from) fail for want of disk space?"""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFull) or (isinstance(e, OSError) and e.errno in NO_SPACE):
            return True
        if any(t in str(e) for t in NO_SPACE_TEXT):
            return True
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def disk_full_as(directory: str | Path, doing: str) -> Iterator[None]:
    """A write in this block that finds no space raises `DiskFull(directory, doing)`; other errors pass."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as e:
        if no_space(e):
            raise DiskFull(directory, doing) from e
        raise


def permission_denied(e: PermissionError) -> UserError:
    """A path the OS refused this user (an unreadable config, a run directory of another user):
    no bug of the program but the files' owner and mode, so the file and the fix, not a traceback."""
    path = Path(os.fsdecode(e.filename)).absolute()
    return UserError(
        f"permission denied: {_refusal(path) or e.strerror}",
        where=str(path),
        fix="run the command as the user who owns these files, give this user access (ls -l, chown, "
        "chmod), or point the command at a copy or a directory this user can write",
    )


def _refusal(path: Path) -> str | None:
    """What this user may not do on the way to `path` (os.path and os.access never raise)."""
    for d in reversed(path.parents):  # from the root down
        if os.path.isdir(d) and not os.access(d, os.X_OK):
            return f"this user cannot enter {d}"
    if os.path.exists(path) and not os.access(path, os.R_OK):
        return "this user cannot read it"
    blocked = unwritable(path)
    if blocked is not None:
        return "this user cannot write it" if blocked == path else f"this user cannot write into {blocked}"
    return None


def deferred_init(cls: type) -> type:
    """`cls` whose constructor keeps its exception, raised again by `ready()`.

    A Ray actor whose `__init__` raises loses the exception object (only its text survives in
    ActorDiedError, wrapped in Ray's traceback); raised from a method it reaches the driver intact,
    so a user error in a constructor is printed as its own one-line message."""

    class Deferred(cls):
        def __init__(self, *args, **kwargs):
            self._init_error: BaseException | None = None
            try:
                super().__init__(*args, **kwargs)
            except Exception as e:
                self._init_error = e

        def ready(self) -> bool:
            if self._init_error is not None:
                raise self._init_error
            return True

    Deferred.__name__, Deferred.__qualname__ = cls.__name__, cls.__qualname__
    Deferred.__doc__ = cls.__doc__
    return Deferred


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no")


def report(err: UserError, debug: bool = False, exc: BaseException | None = None) -> int:
    """Print a user error (with the traceback when debugging) and return its exit code."""
    if debug:
        traceback.print_exception(exc or err)
    print(f"error: {err.message()}", file=sys.stderr, flush=True)
    return err.exit_code


def command(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a command's `main(argv) -> exit code` with the error policy (see the module docstring).

    `--debug` is taken out of argv here, so every command accepts it."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None, *args, **kwargs) -> int:
        argv = list(sys.argv[1:] if argv is None else argv)
        debug = debug_requested(argv)
        argv = [a for a in argv if a != "--debug"]
        try:
            return main(argv, *args, **kwargs)
        except KeyboardInterrupt:
            if debug:
                traceback.print_exc()
            print("interrupted", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
        except Exception as e:
            err = user_error(e)
            if err is None:
                raise  # a bug: the traceback is what a developer needs
            return report(err, debug, e)

    return wrapped
