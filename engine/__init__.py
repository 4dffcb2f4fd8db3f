"""Library code of the commands, one sub-package per job; each combines models/, data/ and utils/.

- ``engine.train``: the training run behind train.py (options, setup, loop, logs).
- ``engine.val``: the evaluation behind val.py, also called by the trainer after each epoch.
- ``engine.detect``: inference on images / videos / streams behind detect.py, and its Python API.
- ``engine.export``: ONNX / TorchScript export behind export.py.
- ``engine.tta``: test-time augmentation, shared by evaluation and inference.
"""
