from setuptools import find_packages, setup

setup(
    name="gpt_scratch",
    version="0.1.0",
    description="GPT-2 written from scratch in PyTorch that is also a native Hugging Face transformers model",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["gpt_scratch", "gpt_scratch.*"]),
    package_data={"gpt_scratch": ["assets/*.tiktoken"]},
    python_requires=">=3.10",
    # Ranges are what has been tested; torch is a range so a CUDA build already installed is kept.
    install_requires=[
        "torch>=2.4,<2.15",
        "transformers>=5.24,<6",
        "accelerate>=1.15,<2",
        "datasets>=5.2,<6",
        "tiktoken>=0.14,<1",
        "safetensors>=0.8,<1",
        "huggingface_hub>=2.4,<3",
        "numpy",
        "pyyaml",
        "tqdm",
        "matplotlib",
    ],
    extras_require={"dev": ["pytest", "parameterized"]},  # parameterized: transformers' common tests
)
