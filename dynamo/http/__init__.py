"""HTTP for the node: the HTTP/1.1 server (llhttp on trio) and the pure helpers of Riak's object API.

message.py holds the Request/Response values, server.py the trio driver (the only module here that
does I/O), riak.py (with header.py and multipart.py behind it) the Riak protocol pieces the
node's routes call.
"""
