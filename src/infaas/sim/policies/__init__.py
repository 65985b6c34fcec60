"""Serving policies over the simulator's interface (``base.Policy``)."""
