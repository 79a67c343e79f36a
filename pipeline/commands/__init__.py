"""ganforge's commands: the CLI entry point and one module per subcommand."""
