"""Deployment formats: `r1 export` (`cli.py`), TensorRT engines (`tensorrt.py`), Triton model
repositories (`triton.py`) and ExecuTorch programs (`executorch.py`). The ONNX graph itself is
`r1.onnx`; running any of them is `r1.inference`."""
