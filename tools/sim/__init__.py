"""A deterministic simulator for sans-IO cores: simulated clock and network, crash/restart, seeded faults.

- `process`: the adapter contract (start/deliver/fire -> Send/Timer/Note actions) and the node factory.
- `network`: latency, loss, duplication, reordering, partitions, clogs.
- `world`: the clock, the event heap, node slots with durable state, trace and log.
- `gossip_node`: the adapter for `gossip.Gossiper` and view checkers.
- `replay`: `SIM_SEED` handling and the replay line failing tests print.
"""

from tools.sim.network import Network, NetworkConfig
from tools.sim.process import Action, Factory, Note, Process, Send, Timer
from tools.sim.world import World

__all__ = ["Action", "Factory", "Network", "NetworkConfig", "Note", "Process", "Send", "Timer", "World"]
