"""The errors streamwatch raises. Bad *input* is never an exception: it is a
:class:`streamwatch.decode.Rejection` routed to the dead-letter topic.

::

    StreamwatchError
    ├── ConfigError          raised when the configuration is invalid (at start)
    └── KafkaSetupError      raised when topics are missing or cannot be used (at start)
"""

from __future__ import annotations

from dataclasses import dataclass


class StreamwatchError(Exception):
    """Base class of every error streamwatch raises."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a configuration: where it is, what is wrong, how to fix it."""

    path: str
    message: str
    hint: str

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}"
        return f"{text}\n    fix: {self.hint}" if self.hint else text


class ConfigError(StreamwatchError):
    """Raised when the configuration is invalid; carries every problem found."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem(s) in the configuration"]
        lines += [f"  {p}" for p in problems]
        super().__init__("\n".join(lines))


class KafkaSetupError(StreamwatchError):
    """Raised when the Kafka topics the config names are missing or unusable."""
