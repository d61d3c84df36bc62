"""mudi.core must stay pure: importing it loads none of the model libraries."""

import subprocess
import sys


def test_core_imports_no_model_library():
    code = ("import sys, importlib, pkgutil, mudi.core\n"
            "for m in pkgutil.iter_modules(mudi.core.__path__): importlib.import_module('mudi.core.' + m.name)\n"
            "import mudi.data, mudi.config, mudi.cli\n"
            "bad = [m for m in ('diffusers', 'transformers', 'peft', 'accelerate') if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"mudi.core / mudi.data / mudi.cli imported {out.stdout.strip()}"
