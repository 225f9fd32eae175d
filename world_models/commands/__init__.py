"""One module per ``world-models`` subcommand: ``HELP``, ``add_arguments(parser)``, ``run(args)``."""
