"""Installs triform: model/, train/, configs/ and tools/ as top-level packages."""
import setuptools

setuptools.setup(
    name="triform",
    version="0.1.0",
    description="Encoder, decoder and encoder-decoder transformer LMs in JAX/Flax, CPU to TPU pod.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",  # jax 0.10, flax 0.12 and grain 0.2 need 3.11
    packages=setuptools.find_packages(include=["model", "model.*", "train", "train.*",
                                               "configs", "configs.*", "tools", "tools.*"]),
    install_requires=[
        "jax>=0.10.2,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "sentencepiece>=0.2.0,<0.3",
        "tensorflow-datasets>=4.9.10,<4.10",
        "array-record>=0.8.6,<0.9",
        "grain>=0.2.18,<0.3",
        "absl-py>=2.1,<3",
        "ml-collections>=1.1,<2",
        "tensorboardX>=2.6.2,<3",
        "numpy>=1.26,<3",
        # Real data (train/records.py, train/hf_tokenizer.py): JSONL / Parquet over fsspec,
        # gs:// through gcsfs (also tools/compare's workdirs), .zst files, HF tokenizer.json.
        "fsspec>=2024.6",
        "gcsfs>=2024.6",
        "pyarrow>=16,<27",
        "zstandard>=0.22,<0.26",
        "tokenizers>=0.20,<0.24",
        # tools/convert_hf.py and tools/export_lora.py: HF checkpoints, read and written
        # without torch (tools/generate.py reads converted directories too).
        "safetensors>=0.8,<0.9",
        # tensorflow-datasets imports it for builders defined in a package but does not declare it.
        "importlib_resources>=6,<8",
        # tools/compare reads workdirs on local disks or buckets with epath.
        "etils[epath]>=1.7,<2",
        # tools/compare: plots and scaling-law fits.
        "matplotlib>=3.8,<4",
        "scipy>=1.11,<2",
        # train/text_metrics.py: BLEU and chrF, ROUGE-L of generated text.
        "sacrebleu>=2.4,<3",
        "rouge-score>=0.1.2,<0.2",
    ],
    extras_require={
        # jax[tpu] brings libtpu (a 213 MB wheel) so tests compile for TPU slices on a CPU.
        "dev": ["pytest>=8,<10", "pytest-xdist>=3.6,<4", "torch==2.13.0", "transformers>=5.23,<6",
                "jax[tpu]>=0.10.2,<0.11",
                # tests/test_finetune.py loads exported LoRA adapters with HF PEFT.
                "peft>=0.21,<0.22", "scikit-learn>=1.5,<2",
                # tests/test_colab.py runs colab/'s notebooks in a Jupyter kernel.
                "nbclient>=0.10,<0.12", "nbformat>=5.10,<6", "ipykernel>=6.29,<8"],
        # tools/convert_hf.py needs neither: torch and transformers build its tests' reference
        # models. On Linux, PyPI's torch brings CUDA libraries; for the CPU build add
        # --extra-index-url https://download.pytorch.org/whl/cpu.
        "convert": ["torch==2.13.0", "transformers>=5.23,<6"],
        "tpu": ["jax[tpu]>=0.10.2,<0.11"],
    },
)
