"""The operator side never imports torch: `finetune run --local` plans, launches and follows
the ranks without it (only the ranks and the sample-answer child load torch)."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "finetune_operator.cli.run_cmd",
    "finetune_operator.local.runner",
    "finetune_operator.local.generate",  # imports transformers only inside main()
]


def test_run_local_modules_do_not_import_torch():
    code = (
        "import sys\n"
        f"for name in {MODULES!r}:\n"
        "    __import__(name)\n"
        "from finetune_operator.cli import build_parser\n"
        "build_parser().parse_args(['run', 'x.yaml', '--local'])\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'deepspeed') "
        "if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == ""
