"""tools/gpu_check.sh runs only where a GPU is lent (never yet): here, every command it would run
must at least parse. Each ``-m helpers.<stage>`` line's flags (its own and those of the bash arrays
it expands) must be flags of that stage, the script must pass ``bash -n``, and its Python compile."""
import re
import subprocess
import sys
from pathlib import Path

import pytest


SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "gpu_check.sh"


def stage_flags(modules) -> dict:
    """``{module: its flags}`` from ``python -m module --help``, the modules run side by side."""
    procs = {m: subprocess.Popen([sys.executable, "-m", m, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, cwd=SCRIPT.parents[1]) for m in modules}
    out = {}
    for m, p in procs.items():
        text = p.communicate(timeout=120)[0]
        assert p.returncode == 0, f"python -m {m} --help failed:\n{text[-2000:]}"
        out[m] = set(re.findall(r"(--[A-Za-z0-9_]+)", text))
    return out


def test_the_script_parses_and_its_python_compiles():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    text = SCRIPT.read_text()
    blocks = re.findall(r"<<'PY'\n(.*?)\nPY\n", text, flags=re.S)
    assert len(blocks) >= 2
    for b in blocks:
        compile(b, "gpu_check.sh (python)", "exec")


def test_every_stage_command_uses_flags_the_stage_has():
    text = SCRIPT.read_text()
    arrays = {m.group(1): set(re.findall(r"(--[A-Za-z0-9_]+)", m.group(2)))
              for m in re.finditer(r"^([A-Z0-9]+)=\((.*?)\)\s*$", text, flags=re.M | re.S)}
    commands = []
    for line in text.splitlines():
        m = re.search(r"-m (helpers\.[a-z_.]+)", line)
        if not m or line.lstrip().startswith("#"):
            continue
        flags = set(re.findall(r"(--[A-Za-z0-9_]+)", line[m.end():]))
        for name in re.findall(r"\$\{([A-Z0-9]+)\[@\]\}", line):
            flags |= arrays[name]
        commands.append((m.group(1), flags, line.strip()))
    known = stage_flags({mod for mod, _, _ in commands})
    for mod, flags, line in commands:
        assert flags <= known[mod], f"{mod}: {sorted(flags - known[mod])} are not its flags (line: {line[:120]})"
    assert len(commands) >= 15


@pytest.mark.integration
def test_the_layer_probe_runs_the_real_stage_on_tiny_shapes(tmp_path):
    """bench/layer_probe.py's path (random models, the shipped step's settings, kd_finetune, the
    scaling) on a CPU; the numbers mean nothing here."""
    import json
    proc = subprocess.run([sys.executable, "bench/layer_probe.py", "--out", str(tmp_path), "--tiny", "--steps", "2"],
                          cwd=SCRIPT.parents[1], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r = json.loads((tmp_path / "probe.json").read_text())
    assert r["runs"]["2"]["steps"] == r["runs"]["4"]["steps"] == 2 and r["s_per_step_32"] is not None   # tiny timings are noise: any sign
    assert r["peak_gib_32"] is None and r["plan_gib_32"] > 0          # no GPU: no peak
    assert "group 8" in r["settings"] and "checkpointing" in r["settings"]
