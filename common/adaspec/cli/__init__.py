"""The `adaspec` command line: one entry point, subcommands registered by each part."""
