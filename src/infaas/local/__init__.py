"""The local stack (a front end): `infaas up` (the API, the autoscaler loop and worker
processes on this machine) and the launcher tests and the demo use to start it.

May import: ``infaas.api``, ``infaas.worker`` and below.
"""
