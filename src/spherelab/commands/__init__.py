"""One module per `spherelab` subcommand; each defines `register(subparsers)` and a handler."""
