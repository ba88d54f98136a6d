"""Export: checkpoints to ONNX (FP32), ONNX INT8 for CPUs, and TensorRT engines, each
checked by a parity gate that runs the artifact through the runtime."""
