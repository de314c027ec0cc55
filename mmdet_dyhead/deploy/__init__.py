"""DynamicHead detectors in stock runtimes (onnxruntime, OpenVINO), no custom op library:
``export`` writes the ONNX parts, ``attach`` runs them inside the config's mmdet detector."""
from .export import export, export_module, test_input_size
from .runtime import DeployedDetector, Session, attach, read_meta, register, require
from .symbolic import BACKENDS, OPSET, onnx_backend

__all__ = ['BACKENDS', 'OPSET', 'DeployedDetector', 'Session', 'attach', 'export', 'export_module',
           'onnx_backend', 'read_meta', 'register', 'require', 'test_input_size']

register()
