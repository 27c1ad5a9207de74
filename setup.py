"""Build the C extension with setuptools; all metadata lives in pyproject.toml."""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ambry.native._cindex",
            sources=["ambry/native/_cindex.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
        ),
        Extension(
            "ambry.native._crecord",
            sources=["ambry/native/_crecord.c"],
            depends=["ambry/native/vendor/xxhash.h"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        ),
    ]
)
