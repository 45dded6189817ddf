"""Run schemathesis (its CLI: its pytest plugin does not load under pytest 9) against a gateway."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


@dataclass
class FuzzRun:
    returncode: int
    generated: int
    passed: int
    output: str


def run_schemathesis(base_url: str, max_examples: int, seed: int | None = None, timeout_s: float = 900) -> FuzzRun:
    cmd = [str(Path(sys.executable).with_name("schemathesis")), "run", base_url + "/openapi.json",
           "--checks", "not_a_server_error,openai_error_shape", "--max-examples", str(max_examples)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "support.fuzz_hooks",
           "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "NO_COLOR": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    out = proc.stdout + proc.stderr
    match = re.search(r"(\d+) generated, (?:.*?(\d+) passed)?", out)
    generated = int(match.group(1)) if match else 0
    passed = int(match.group(2)) if match and match.group(2) else 0
    return FuzzRun(proc.returncode, generated, passed, out)
