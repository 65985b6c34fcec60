"""INFaaS: model-less inference serving.

Model owners register a trained model once; the service generates variants,
profiles them, and answers queries that state *what* they need (task,
accuracy, latency, cost) by deciding *how* (variant, worker, batch).
"""

__version__ = "0.1.0"
