"""One module per ``world-models`` subcommand.

Each has ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""
