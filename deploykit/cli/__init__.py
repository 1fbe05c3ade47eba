"""The ``deploykit`` command line: one module per subcommand."""
