"""Builds the optional compiled top-k kernel (see src/impresslearn/layers/native.py).

Everything else about the package is in pyproject.toml. The kernel is a plain C library loaded
with ctypes; where no C compiler is present the build skips it (optional=True) and the package
runs its NumPy code instead, with the same results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "impresslearn.layers._topk",
            ["src/impresslearn/layers/_topk.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
