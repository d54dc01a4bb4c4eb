"""dynamo: a Dynamo-style, leaderless, always-writable key-value store on trio.

The node, its I/O drivers, the client and the CLI live here. The sans-IO cores (causality, objects,
quorum logic, hints, the storage interface) import nothing from trio; the drivers around them do.
"""

__version__ = "0.1.0"
