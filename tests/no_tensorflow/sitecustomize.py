"""Makes TensorFlow impossible to import, as on a GPU image with JAX only.

Python imports `sitecustomize` at start-up from its path: tests/conftest.py imports this
module and puts its folder first on PYTHONPATH when NST_BLOCK_TENSORFLOW=1, so the test
process and every process it starts (`nst run`, Prefect's server, Dask workers) refuse it.
"""

import sys

BLOCKED = "tensorflow"


class RefuseTensorFlow:
    """A finder ahead of all others: `import tensorflow` fails as if it were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == BLOCKED or name.startswith(BLOCKED + "."):
            raise ModuleNotFoundError(f"No module named {name!r} (NST_BLOCK_TENSORFLOW=1)", name=name)
        return None


if not any(isinstance(finder, RefuseTensorFlow) for finder in sys.meta_path):
    sys.meta_path.insert(0, RefuseTensorFlow())
