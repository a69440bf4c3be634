"""Built-in subcommands; each module exposes ``register(app)`` and is listed under ``leffa.commands``."""
