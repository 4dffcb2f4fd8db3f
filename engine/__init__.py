"""Library code of the commands, one sub-package per job; each combines models/, data/ and utils/.

- ``engine.train``: the training run behind train.py (options, setup, loop, logs).
- ``engine.evolve``: hyper-parameter evolution (train.py --evolve): Optuna trials of ``engine.train``.
- ``engine.val``: the evaluation behind val.py, also called by the trainer after each epoch.
- ``engine.detect``: inference on images / videos / streams behind detect.py, and its Python API.
- ``engine.export``: ONNX / TorchScript / OpenVINO export behind export.py.
- ``engine.tta``: test-time augmentation, shared by evaluation and inference.
- ``engine.formats``: the one table of weights-file kinds (what writes, reads and recognises each)
  and the metadata exports carry; ``engine.backends`` (+ ``engine.openvino_backend``): their
  readers behind one call. Shared by detection, evaluation and export, owned by none of them.
"""
