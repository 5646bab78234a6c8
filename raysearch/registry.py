"""Name -> factory registries whose unknown-name error lists the known names."""

from __future__ import annotations


class UnknownNameError(KeyError):
    """A name that is not in a registry; the message lists the accepted names."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class Registry(dict):
    """A plain dict of name -> factory, named by `kind` for its error messages."""

    def __init__(self, kind: str, entries: dict | None = None):
        super().__init__(entries or {})
        self.kind = kind

    def __missing__(self, name):
        raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self))}")

