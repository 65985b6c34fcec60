"""Graph conversions behind the GPU and Inferentia2 variants.

* ``to_float16``: an fp32 ONNX graph to fp16, keeping the graph's input and
  output types (fp32 stays fp32 at the edges, Cast nodes sit inside), so a
  caller feeds and reads the same arrays as with the original. The result
  passes ``onnx.checker`` with full type checking, or the conversion is
  refused (``NotApplicable``).
* ``onnx_to_torch``: an ONNX graph to a ``torch.nn.Module`` with onnx2torch,
  after rewriting the few ``ai.onnx.ml`` operators that have a standard
  equivalent (scikit-learn classifiers end in ``ArrayFeatureExtractor``).
* ``trace_torchscript``: a module traced at one fixed batch size and saved as
  TorchScript with the tensor names it needs (``infaas.json`` inside the
  file); ``compile_neuron`` does the same through ``torch_neuronx.trace`` and
  exists only on Inferentia worker images.

Why not onnxconverter-common's ``convert_float_to_float16``: its current
implementation leaves ``Cast(to=FLOAT)`` nodes alone, so the graph that
skl2onnx writes for an MLP comes out with an fp32 tensor feeding an fp16
MatMul and fails ``onnx.checker``. The converter here follows the same idea
(block list of operators kept in fp32, casts at the boundaries) and checks
its own result.
"""

from infaas.runtime.convert.fp16 import (  # noqa: F401
    FP16_KEEP_FP32,
    FP16_MAX,
    float16_bytes,
    to_float16,
)
from infaas.runtime.convert.graphs import (  # noqa: F401
    DEFAULT_DOMAINS,
    copy_model,
    graph_io,
    io_types,
)
from infaas.runtime.convert.torchscript import (  # noqa: F401
    META_FILE,
    NEURON_MISSING,
    TORCH_OPSET,
    compile_neuron,
    example_inputs,
    import_torch_neuronx,
    onnx_to_torch,
    prepare_for_torch,
    read_meta,
    torchscript_variant,
    trace_torchscript,
)
