"""spotgate.api."""
