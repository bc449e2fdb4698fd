"""The version of the core, which the template pins in lockstep (docs/releasing.md).

A module of its own so that the core's modules read it without importing the package itself,
whose ``__init__`` imports them: that would be an import circle.
"""

__version__ = "0.6.0"
