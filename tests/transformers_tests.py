"""transformers' own common model tests, taken at test time from the sdist of the installed version.

Nothing of transformers' test code is committed here: the sdist is downloaded from
PyPI once (`pip download --no-deps --no-binary :all: transformers==<version>`) into
a cache, and the three common-test modules are copied out of it into a small package
`hf_common_tests`. The sdist lacks three modules those import (exporters/,
generation/ and utils/ helpers); they are replaced by the stand-ins below, which
add no tests of their own.
"""

import glob
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import transformers

MODULES = ("test_modeling_common.py", "test_configuration_common.py", "test_training_mixin.py")

# What the three modules import that the sdist does not ship.
STAND_INS = {
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    # Base-config fields with values other than their defaults: ConfigTester checks that a
    # config class passes each of them through unchanged (check_config_can_be_init_without_params).
    "utils/test_configuration_utils.py": (
        "config_common_kwargs = {\n"
        "    'return_dict': False,\n"
        "    'output_hidden_states': True,\n"
        "    'output_attentions': True,\n"
        "    'dtype': 'float16',\n"
        "    'chunk_size_feed_forward': 5,\n"
        "    'architectures': ['BertModel'],\n"
        "    'id2label': {0: 'label'},\n"
        "    'label2id': {'label': '0'},\n"
        "    'problem_type': 'regression',\n"
        "}\n"
    ),
}


def cache_root():
    base = os.environ.get("GPT_SCRATCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gpt_scratch")
    return os.path.join(base, f"transformers-tests-{transformers.__version__}")


def ensure_common_tests():
    """Return a folder on which `import hf_common_tests.test_modeling_common` works."""
    root = cache_root()
    pkg = os.path.join(root, "hf_common_tests")
    if all(os.path.exists(os.path.join(pkg, m)) for m in MODULES):
        return root
    version = transformers.__version__
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
               f"transformers=={version}", "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = glob.glob(os.path.join(tmp, "transformers-*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise RuntimeError(
                f"could not download the transformers {version} sdist for its common tests "
                f"(needs PyPI): {done.stderr.strip()[-500:]}"
            )
        staging = pkg + ".partial"
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        with tarfile.open(archives[0]) as tar:
            for member in tar.getmembers():
                parts = member.name.split("/")
                if len(parts) == 3 and parts[1] == "tests" and parts[2] in MODULES:
                    with tar.extractfile(member) as src, open(os.path.join(staging, parts[2]), "wb") as dst:
                        shutil.copyfileobj(src, dst)
    missing = [m for m in MODULES if not os.path.exists(os.path.join(staging, m))]
    if missing:
        raise RuntimeError(f"the transformers {version} sdist has no tests/{missing[0]}")
    open(os.path.join(staging, "__init__.py"), "w").close()
    for rel, text in STAND_INS.items():
        path = os.path.join(staging, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(os.path.join(os.path.dirname(path), "__init__.py"), "a").close()
        with open(path, "w") as f:
            f.write(text)
    shutil.rmtree(pkg, ignore_errors=True)
    os.replace(staging, pkg)
    return root


def import_common_tests():
    root = ensure_common_tests()
    if root not in sys.path:
        sys.path.insert(0, root)
    from hf_common_tests import test_configuration_common, test_modeling_common, test_training_mixin

    return test_modeling_common, test_configuration_common, test_training_mixin
