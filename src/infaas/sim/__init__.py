"""A trace-driven, discrete-event simulator of the cluster, and the comparison of serving policies.

``engine`` simulates machines, replicas, batching, queues, loads and prices; ``policies`` holds the
product's own policy (driving ``selection.select`` and ``scaling.plan`` unchanged) and the
baselines (INFaaS as its research code behaved, Clipper-style, static, the MILP lower bound on
cost); ``data`` reads profiles and traces (the Proteus artifact, the product's own, synthetic);
``compare`` runs them and writes ``docs/evaluation.md``. Command: ``infaas sim compare``.

A front end of the core: it calls the same decisions (``infaas.core``) the live service does.
May import: ``infaas.wiring`` and below; never ``api`` or ``worker``.
"""
