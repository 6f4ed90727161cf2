"""Azure Functions entry point: everything lives in the spotgate package."""

from spotgate.hosts.azure import build_function_app

app = build_function_app()
