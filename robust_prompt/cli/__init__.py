"""The `robust-prompt` command line. Only this package imports gin."""
