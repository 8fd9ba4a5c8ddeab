"""COCO AP evaluation with a per-class table: arrives with the evaluation issue (#7)."""
import sys

if __name__ == "__main__":
    sys.exit("val.py: evaluation is not implemented yet (issue 7)")
