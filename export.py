"""ONNX export for NPU toolchains: arrives with the export issue (#9)."""
import sys

if __name__ == "__main__":
    sys.exit("export.py: export is not implemented yet (issue 9)")
