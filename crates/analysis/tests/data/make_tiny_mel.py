"""Builds tests/data/models/tiny-mel/tiny_mel.onnx: a tiny log-mel model for the manifest tests.

Input "mel" float32 [1, 32, 64] (batch, mel bands, frames). Outputs "embedding" [1, 32] (mean of
each band over the frames) and "probs" [1, 4] (softmax of a fixed linear map of the embedding).
Run: python3 make_tiny_mel.py   (needs the `onnx` package; the output is committed)
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

N_MELS, FRAMES, LABELS = 32, 64, 4
# Fixed weights: label k prefers bands 8k .. 8k+7.
w = np.zeros((N_MELS, LABELS), dtype=np.float32)
for k in range(LABELS):
    w[8 * k : 8 * k + 8, k] = 0.25
nodes = [
    helper.make_node("ReduceMean", ["mel"], ["embedding"], axes=[2], keepdims=0),
    helper.make_node("MatMul", ["embedding", "w"], ["logits"]),
    helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
]
graph = helper.make_graph(
    nodes,
    "tiny_mel",
    [helper.make_tensor_value_info("mel", TensorProto.FLOAT, [1, N_MELS, FRAMES])],
    [
        helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, N_MELS]),
        helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, LABELS]),
    ],
    initializer=[numpy_helper.from_array(w, "w")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="trackmill-tests")
model.ir_version = 8
onnx.checker.check_model(model)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "tiny-mel", "tiny_mel.onnx")
onnx.save(model, out)
print(out)
