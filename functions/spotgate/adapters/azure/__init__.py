"""spotgate.adapters.azure."""
