"""pyctr's command groups, one module each, in the order `pyctr --help` lists
them. Each module has `register(subparsers)`; a command's handler is
`fn(client, args) -> exit code`."""
