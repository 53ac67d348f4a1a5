"""The `phenolens` command line: thin typer commands over the library API."""
