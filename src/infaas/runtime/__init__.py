"""Running models: validate an upload, plan and convert variants, profile them, execute them
(onnxruntime, TorchScript, torch-neuronx), and which runtimes this machine has.

May import: ``infaas.core``.
"""
