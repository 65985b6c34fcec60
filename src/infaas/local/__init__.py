"""The local stack: embedded adapters, worker processes, `infaas up`."""
