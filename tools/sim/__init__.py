"""A deterministic simulator for sans-IO cores: simulated clock and network, crash/restart, seeded faults.

- `process`: the adapter contract (start/deliver/fire -> Send/Timer/Note actions) and the node factory.
- `network`: latency, loss, duplication, reordering, partitions, clogs.
- `world`: the clock, the event heap, node slots with durable state, trace and log.
- `gossip_node`: the adapter for `gossip.Gossiper` and view checkers.
- `replay`: `SIM_SEED` handling and the replay line failing tests print.

Whole nodes (real `dynamo.node.Node`s in one trio run, virtual clock, seeded scheduler):
- `trio_run`: `run_simulation(seed, scenario)` and `SimSession` (step a cluster from synchronous code).
- `node_cluster`: `open_cluster`/`SimCluster`: start, crash, stop, restart nodes; HTTP-level clients.
- `trio_network`, `trio_pool`: the simulated RPC network and the PeerPool stand-in the nodes use.
- `history`, `node_workload`: client histories, workloads and the invariant checkers.
"""

from tools.sim.network import Network, NetworkConfig
from tools.sim.process import Action, Factory, Note, Process, Send, Timer
from tools.sim.world import World

__all__ = ["Action", "Factory", "Network", "NetworkConfig", "Note", "Process", "Send", "Timer", "World"]
