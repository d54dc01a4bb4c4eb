"""The KV service of a node, in layers: replica.py (local copies, per-key locks, replica RPCs),
membership.py (gossip driver, ring, who is down, preference lists, bucket properties), coordinator.py
(gets, puts and deletes against the preference list, read repair, forwarding) and handoff.py (hinted
handoff). dynamo/node.py wires them together with the RPC and HTTP servers.
"""
