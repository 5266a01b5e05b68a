"""Is there a C++ compiler torch.compile can use? Asked once, before a lesson compiles anything.

    cpp_compiler()     the compiler inductor (torch.compile's CPU backend) would call, if it works
    can_compile()      True when there is one; lessons skip their compiled rows otherwise
    missing_line()     the one line a lesson prints instead, naming what to install on this OS

torch.compile turns a model into C++ and compiles it with the machine's compiler (g++ on Linux,
clang++ on macOS, cl on Windows; $CXX overrides it). Without one it fails only when the first
compile starts, deep in inductor; this asks the same question up front, by compiling a two-line
file with the compiler inductor would pick.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

INSTALL = {
    "darwin": "the Xcode command-line tools (`xcode-select --install`)",
    "win32": "Visual Studio Build Tools (the 'Desktop development with C++' workload), "
             "then start Jupyter from the 'x64 Native Tools' prompt",
    "linux": "a C++ compiler (Debian/Ubuntu: `sudo apt install g++`; Fedora: `sudo dnf install gcc-c++`)",
}


def _inductor_choice() -> str | None:
    """The compiler torch.compile's inductor picks ($CXX, else g++ / clang++ / cl), or None."""
    try:
        from torch._inductor import cpp_builder
        return cpp_builder.get_cpp_compiler()
    except Exception:  # inductor raises its own InvalidCxxCompiler, or a subprocess / OS error
        return None


@functools.cache
def cpp_compiler() -> str | None:
    """The compiler inductor would call, if it compiles a two-line C++ file here; else None."""
    compiler = _inductor_choice()
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "probe.cpp")
        source.write_text("#include <cstdint>\nint64_t probe(int64_t x) { return x + 1; }\n")
        if sys.platform == "win32":
            command = [compiler, "/nologo", "/c", str(source), f"/Fo{Path(tmp, 'probe.obj')}"]
        else:
            command = [compiler, "-c", str(source), "-o", str(Path(tmp, "probe.o"))]
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=60, cwd=tmp)
        except (OSError, subprocess.SubprocessError):
            return None
    return compiler


def can_compile() -> bool:
    """True when torch.compile has a working C++ compiler here."""
    return cpp_compiler() is not None


def missing_line(who: str = "this lesson", what: str = "the compiled rows") -> str:
    """One line for a lesson without a compiler: what it skips and what to install on this OS."""
    platform = sys.platform if sys.platform in INSTALL else "linux"
    cxx = os.environ.get("CXX")
    asked = f" ($CXX={cxx!r} does not compile)" if cxx else ""
    return (f"No C++ compiler{asked}: torch.compile needs one, so {who} skips {what}. "
            f"To run them, install {INSTALL[platform]} and restart the kernel.")
