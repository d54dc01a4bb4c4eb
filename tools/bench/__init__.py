"""The load generator and benchmark of the store: puts and gets at ONE, QUORUM and ALL, measured with wrk.

    python -m tools.bench --url http://127.0.0.1:8001 --url http://127.0.0.1:8002 --url http://127.0.0.1:8003
    python -m tools.bench --start-cluster          # starts `dynamo cluster up --nodes 3` in a temp dir
    python -m tools.bench --start-cluster --reference etcd   # then the same load on a local etcd cluster

Parts: script.py writes the Lua script wrk runs for one cell, wrk.py finds and runs wrk, result.py reads its
numbers back, report.py prints the Markdown table, preload.py writes the keys the gets read, cluster.py
starts and stops a local cluster, etcd.py the etcd cluster the issue measures against, debian.py installs
wrk and etcd when missing, stub.py is a stand-in store for trying all of it. A benchmark measures
and prints; tests never assert timings.
"""
