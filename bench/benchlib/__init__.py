"""The pieces of the benchmark ``bench/run.py`` (also used by ``bench/quick.py``), one module per job:

- ``config``: constants shared by several modules (paths, host, the models' names, the systems' labels);
- ``procs``: processes and the machine, from /proc (CPU seconds, memory, busy time, autogroup nice);
- ``client``: the closed-loop asyncio HTTP/1.1 client, its ``Result``, and each system's request;
- ``models``: the SqueezeNet build, onnxruntime sessions, checking answers against onnxruntime;
- ``servers``: the peer servers (started and stopped by PID), the peers' virtualenv, raw onnxruntime;
- ``report``: the machine's description, the tables and the section of docs/performance.md.

Import it with ``bench/`` on ``sys.path`` (``bench/run.py`` and ``bench/quick.py`` put it there).
"""
