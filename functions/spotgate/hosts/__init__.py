"""Composition roots: where settings meet adapters and the runtime is built, whole, once.

`gateway.py` builds the gateway and control plane every host shares,
`local.py` the dev stack around it, `azure.py` the Azure Functions app.
Nothing outside this package (and the CLI, which calls it) imports both
adapters and settings.
"""
