"""Deployment: export (ONNX), quantization, pruning, distillation, the model registry and serving.

The floor above `llm/` and `rag/` where the deployment issues land; a model gets here through `dlforge.artifacts`
(the model folder) and its task's input/output signature (`dlforge.registry.create_task(name).signature`).
"""
