"""Build the compiled kernels of binidx.

Metadata lives in pyproject.toml; this file only declares the extensions and probes
the compiler.  Every ``binidx/_kernels/*.pyx`` becomes one C++ extension module.

Portability rules (see docs/design.md):

* ``-O3`` by default, never ``-march=native`` unless ``BINIDX_NATIVE=1`` is set, so a
  built wheel runs on any x86-64 CPU.  Fast popcount / AVX-512 kernels are compiled
  per function with ``__attribute__((target(...)))`` and picked at run time.
* OpenMP is used when the compiler supports it; without it the kernels run on one
  thread and ``binidx.show_config()`` says so.
"""
import os
import subprocess
import sys
import tempfile
from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup


def _compiler_accepts(flag: str) -> bool:
    """Return True when the C++ compiler builds and links a tiny program with ``flag``."""
    cxx = os.environ.get("CXX", "c++")
    source = "#include <omp.h>\nint main(){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as fh:
            fh.write(source)
        try:
            result = subprocess.run(
                [cxx, flag, src, "-o", os.path.join(tmp, "probe")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        except OSError:
            return False
        return result.returncode == 0


def _extensions():
    compile_args = ["-O3", "-std=c++17", "-fno-math-errno", "-ffp-contract=off", "-Wno-unused-function",
                    "-Wno-maybe-uninitialized"]
    link_args = []
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    if sys.platform != "win32" and _compiler_accepts("-fopenmp"):
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")
        macros.append(("BINIDX_HAVE_OPENMP", "1"))
    if os.environ.get("BINIDX_NATIVE") == "1":
        compile_args.append("-march=native")
    # Every module includes the kernel headers: list them so that editing only a header
    # rebuilds the extensions (without it build_ext kept a newer .so and silently
    # measured the old code).
    headers = sorted(glob(os.path.join("binidx", "_kernels", "*.h")))
    modules = []
    for path in sorted(glob(os.path.join("binidx", "_kernels", "*.pyx"))):
        name = os.path.splitext(path)[0].replace(os.sep, ".")
        modules.append(
            Extension(
                name,
                [path],
                language="c++",
                include_dirs=[np.get_include(), os.path.join("binidx", "_kernels")],
                extra_compile_args=compile_args,
                extra_link_args=link_args,
                define_macros=macros,
                depends=headers,
            )
        )
    return cythonize(
        modules,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )


setup(ext_modules=_extensions())
