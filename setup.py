"""Install the YOLOX trainer: `pip install -e .` (runtime) or `pip install -e ".[dev]"` (tests)."""
from setuptools import find_packages, setup

setup(
    name="yolox5",
    version="0.1.0",
    description="A YOLOv5-style trainer for YAML-built YOLOX detectors, with NPU-friendly export",
    python_requires=">=3.9",
    packages=find_packages(include=["models", "models.*", "utils", "utils.*"]),
    py_modules=["train", "val", "export", "detect"],
    package_data={"models": ["*.yaml"]},
    install_requires=[
        "torch>=2.0,<2.15",  # the CPU wheel torch==2.13.0 satisfies this; install it first
        "numpy>=1.23",
        "opencv-python>=4.6",
        "pyyaml>=5.4",
        "pycocotools>=2.0.6",
        "matplotlib>=3.5",
        "onnx>=1.14",
        "onnxsim>=0.4.33",  # onnx-simplifier: its wheels are published under this name
        "tqdm>=4.64",
        "onnxruntime>=1.16",  # runs exported models in val.py and checks exports
        "simplejpeg>=1.7",  # libjpeg-turbo without OpenCV's overhead: JPEGs decode ~2x faster, same pixels
        "faster-coco-eval>=1.6",  # COCOeval with pycocotools' API and numbers, ~9x faster: the default backend
    ],
    extras_require={
        # pytest (with pytest-xdist: README runs the tests on every core), and what the official yolox
        # package imports (installed --no-deps by tests/install_reference.sh) so tests can compare against it
        "dev": ["pytest>=7", "pytest-xdist>=3.5", "loguru", "tabulate", "thop", "psutil", "wheel"],
        # export.py --include openvino (nncf for --int8); CI does not install them, their tests skip
        "openvino": ["openvino>=2024.0", "nncf>=2.10"],
        # export.py --include rknn: it pins torch<=2.4, numpy<=1.26, onnx<=1.18, so install it in its own
        # environment (README, "OpenVINO and RKNN"); 2.5 imports pkg_resources, gone from setuptools 81
        "rknn": ["rknn-toolkit2>=2.0", "setuptools<81"],
    },
)
