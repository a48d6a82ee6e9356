"""Build hook for the optional C fan-out helper; all project metadata is in pyproject.toml.

`pip install -e .` (or building a wheel) compiles `sfu.fastpath._fanout` with cffi from
sfu/fastpath/fanout.c. The extension is optional: without cffi or a working C compiler the
install still succeeds, with a warning, and hoinghi runs the pure-Python fan-out
(`sfu.fastpath.AVAILABLE` is False).

cffi reaches an isolated build environment through `setup_requires`: setuptools' PEP 517 backend
reports it from get_requires_for_build_wheel/editable, so pip installs it before building.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
BUILDER = ROOT / "sfu" / "fastpath" / "_build.py"
FASTPATH = "sfu.fastpath._fanout"
# Copied from the Extension cffi generates onto the declared one.
_EXT_FIELDS = ("sources", "include_dirs", "define_macros", "undef_macros", "library_dirs",
               "libraries", "runtime_library_dirs", "extra_objects", "extra_compile_args",
               "extra_link_args", "depends")


def _cffi_extension(build_temp: str) -> Any:
    # Loaded by path: importing the `sfu` package here would need its runtime dependencies,
    # which an isolated build environment does not have.
    spec = importlib.util.spec_from_file_location("_hoinghi_fastpath_build", BUILDER)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {BUILDER}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ffibuilder.distutils_extension(tmpdir=build_temp, verbose=False)


class OptionalBuildExt(build_ext):
    """build_ext that generates the cffi source first and treats its failure as 'not built'."""

    def build_extensions(self) -> None:
        for ext in list(self.extensions):
            if ext.name != FASTPATH:
                self.build_extension(ext)
                continue
            try:
                generated = _cffi_extension(self.build_temp)
                for field in _EXT_FIELDS:
                    setattr(ext, field, getattr(generated, field))
                self.build_extension(ext)
            except Exception as exc:  # no cffi, no compiler, a compile or link error
                # Forget it, so nothing later (inplace copy, editable wheel) looks for the file.
                self.extensions.remove(ext)
                sys.stderr.write(
                    f"WARNING: optional C fan-out helper not built ({exc!r}); "
                    "hoinghi will use the pure-Python fan-out\n")


setup(
    # Declared with the hand-written source so an sdist carries it; the source list is
    # replaced by cffi's generated module (which inlines fanout.c) at build time.
    ext_modules=[Extension(FASTPATH, sources=[
        f"sfu/fastpath/{name}" for name in ("uring.c", "fanout.c", "fanout_ring.c", "ingress.c")])],
    cmdclass={"build_ext": OptionalBuildExt},
    setup_requires=["cffi>=1.15"],
)
