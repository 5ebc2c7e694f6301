"""Writes basic_pitch_notes_ref.f32: Basic Pitch's note output for one window, computed with the
Python onnxruntime 1.31.1, as little-endian float32 [172 * 88]. The input is the window that
tests/model_basic_pitch.rs builds: 0.5 sin(2π 440 t) + 0.25 sin(2π 1318.51 t) at 22,050 Hz.
Run: python3 basic_pitch_reference.py PATH/TO/nmp.onnx   (needs onnxruntime==1.31.1 and numpy)
"""
import os
import sys

import numpy as np
import onnxruntime as ort

n = 43844
t = np.arange(n, dtype=np.float64) / 22050.0
x = (0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.25 * np.sin(2 * np.pi * 1318.51 * t)).astype(np.float32)
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
notes = s.run(["StatefulPartitionedCall:1"], {"serving_default_input_2:0": x.reshape(1, n, 1)})[0]
assert notes.shape == (1, 172, 88), notes.shape
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "basic_pitch_notes_ref.f32")
notes.astype("<f4").tofile(out)
print(out, float(notes.mean()))
