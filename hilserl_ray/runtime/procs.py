"""Processes from /proc: what a run (or a test) started, found by parentage or by session."""

from __future__ import annotations

from pathlib import Path


def _table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id) of every process now."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # after the command name (which may hold spaces and parentheses): state ppid pgrp session
            fields = stat.read_text().rsplit(")", 1)[1].split()
            out[int(stat.parent.name)] = (int(fields[1]), int(fields[3]))
        except (OSError, IndexError, ValueError):
            continue
    return out


def descendants(parent: int) -> list[int]:
    """Every process below `parent`, nearest first."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in _table().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [parent]
    while todo:
        for c in children.get(todo.pop(0), []):
            found.append(c)
            todo.append(c)
    return found


def session(sid: int) -> list[int]:
    """Every process in session `sid` (children keep their parent's session unless they leave it)."""
    return [pid for pid, (_, s) in _table().items() if s == sid]


def command_line(pid: int) -> str:
    """The process's command line as its title shows it (`ray::Robot` for a Ray actor), or ''."""
    try:
        return (
            (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""
