"""The ``leffa`` command line: a Typer app whose subcommands are plugins of the ``leffa.commands`` entry-point group."""
