"""ONNX graphs: export with R1 metadata and a parity check (`export.py`), reading and running them
(`graph.py`), compaction (`compact.py`) and dynamic height/width (`dynamic_hw.py`). How a family
exports is its spec's `ExportHook` (`r1.family`)."""
