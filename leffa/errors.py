"""The one exception type for user mistakes: the CLI prints its message on one line and exits non-zero."""

from __future__ import annotations

import re


class LeffaError(Exception):
    """A problem with the user's input (file, option, checkpoint) that a one-line message explains.

    ``option`` names the parameter or setting the problem concerns, by its Python name (``"max_batch"``), or several
    (``("height", "width")``). The library words its message with those names (``"max_batch 0: must be at least
    1"``), which reads right to a Python caller; a front end words it with its own spelling (``worded``), so the
    CLI says ``--max-batch 0: ...`` without the library knowing about flags.
    """

    def __init__(self, message: str, option: str | tuple[str, ...] | None = None):
        super().__init__(message)
        self.message = message
        self.options: tuple[str, ...] = (option,) if isinstance(option, str) else tuple(option or ())

    @property
    def option(self) -> str | None:
        """The (first) option concerned, or ``None``."""
        return self.options[0] if self.options else None

    def worded(self, spell) -> str:
        """The message with each option's name, wherever it stands as a whole word, replaced by ``spell(name)``.

        Messages therefore use an option's name only where they mean the option (``"data: not given"``, not
        ``"no training data"``).

        ``spell`` returns the front end's name for an option (``lambda name: "--" + name.replace("_", "-")``), or
        ``None`` to keep the library's word.
        """
        message = self.message
        for name in self.options:
            spelled = spell(name)
            if spelled:
                word = rf"(?<![\w-]){re.escape(name)}(?![\w-])"
                message = re.sub(word, spelled.replace("\\", r"\\"), message)  # a template: escape backslashes
        return message
