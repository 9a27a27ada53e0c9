#!/usr/bin/env python
"""Run the notebook chain of a profile headless, through papermill.

    python run_all.py                          # the demo profile (configs/demo.yaml)
    python run_all.py --profile kaggle_eedi    # or a path to a YAML file
    python run_all.py --from mine_r2           # continue a chain from a step
    python run_all.py --only prepare,baseline  # run just these steps
    python run_all.py --set seed=7 --set train_r1.num_train_epochs=2
    python run_all.py --time_budget 11h        # stop at the last unit of work that fits, say how to continue

A profile names a run and lists steps; a step is a notebook plus parameters, so a notebook may
appear several times under different step names. ``{run_dir}`` in a string parameter (or in a var)
is replaced by ``<output_root>/<run_name>``, ``{output_root}`` by the output root, ``{<var>}`` by the
var. Every parameter is checked against the notebook's ``parameters`` cell before anything runs, and
the profile's ``requires`` (paths made outside the chain) before the first step. Executed notebooks
go to ``<run_dir>/notebooks/``; ``manifest.json`` records parameters, versions, the git commit and
per-step wall time.

``--time_budget`` (``11h``, ``90m``, ``1h30m``, seconds) sets a deadline: a step does not start when
the time is up or when its last recorded wall time would overrun; training (03) gets the deadline
(``$EEDI_DEADLINE``) and stops after the last epoch that fits. The chain then stops and prints
the ``--from <step> --run_name <run>`` command that continues it, in this session or (after
copying the run folder, ``--resume_dir``) in the next one.
"""
from __future__ import annotations

import ast
import argparse
import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import yaml

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from helpers.common.cli import FLAG_SPELLINGS, canonical_flags  # noqa: E402
from helpers.common.io_utils import write_json  # noqa: E402
from helpers.train.budget import budget_env, read_stop_report  # noqa: E402


class ChainError(RuntimeError):
    pass


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error (YAML keeps the last)."""


def _unique_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue                        # `<<: *anchor` keys may be overridden: that is the point
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ChainError(f"{loader.name}:{key_node.start_mark.line + 1}: key {key!r} given twice in one "
                             f"mapping (first on line {seen[key]}); YAML would keep the last silently")
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)

# Scalars by YAML 1.2's core schema, not PyYAML's 1.1: 1e-4 is a number (1.1: the string '1e-4', which
# reached AdamW), 010 is ten (1.1: octal 8), yes/no/on/off are strings (1.1: booleans).
_TAGS = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
UniqueKeyLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag not in _TAGS] for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}
UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                      list("tTfF"))
UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                      list("-+0123456789"))
UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _int_12(loader, node):
    v = loader.construct_scalar(node)
    return int(v[2:], 8) if v.startswith("0o") else int(v[2:], 16) if v.startswith("0x") else int(v, 10)


def _bool_12(loader, node):
    return loader.construct_scalar(node).lower() == "true"


UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _int_12)
UniqueKeyLoader.add_constructor("tag:yaml.org,2002:bool", _bool_12)


def load_value(raw: str):
    """One ``--set``/``--var`` value, read as a profile's values are (YAML 1.2 scalars, lists)."""
    return yaml.load(raw, Loader=UniqueKeyLoader)


def read_yaml(path: Path):
    """A profile file, with duplicate keys refused (file and line named)."""
    with open(path, encoding="utf-8") as f:
        loader = UniqueKeyLoader(f)
        loader.name = str(path)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()


def on_kaggle() -> bool:
    """Kaggle sets KAGGLE_KERNEL_RUN_TYPE ("Interactive" or "Batch") in its notebooks."""
    from helpers.kaggle.env import on_kaggle as kaggle
    return kaggle()


# steps that stop themselves at the deadline after a finished unit of work (an epoch) and resume
INTERRUPTIBLE = {"03_kd_finetune"}


def parse_duration(text) -> float:
    """``11h``, ``90m``, ``45s``, ``1h30m``, ``3600`` (seconds) -> seconds."""
    t = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", t)
    if not parts or "".join(n + u for n, u in parts) != t:
        raise ChainError(f"--time_budget {text!r}: expected a duration like 11h, 90m, 1h30m or seconds")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def copy_run(src: Path, dst: Path) -> int:
    """Copy a previous session's run folder (read-only on Kaggle: /kaggle/input/...) into ``dst``,
    every file and folder writable; free disk checked first. -> bytes copied."""
    from helpers.common.io_utils import check_free_disk
    src = Path(src)
    if not (src / "manifest.json").is_file():
        raise ChainError(f"--resume_dir {src}: no manifest.json there (not a run_all.py run folder)")
    files = [f for f in src.rglob("*") if f.is_file() and f.name != ".run_all.lock"]
    need = sum(f.stat().st_size for f in files)
    check_free_disk(dst, need, f"the run folder copied from {src}")
    for f in files:
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)                 # contents only: the copy is writable
    print(f"copied {len(files)} files ({need / 1e9:.2f} GB) from {src} to {dst}", flush=True)
    return need


def continue_command(profile: str, start: str, run_name: str, budget: str | None) -> str:
    """The command that continues a stopped run, every value shell-quoted (safe to paste)."""
    q = shlex.quote
    cmd = f"python run_all.py --profile {q(profile)} --from {q(start)} --run_name {q(run_name)}"
    return cmd + (f" --time_budget {q(budget)}" if budget else "")


NAME_RE = re.compile(r"[A-Za-z0-9._-]+")


def check_name(kind: str, name) -> str:
    """A run or step name becomes a folder or file name: ``[A-Za-z0-9._-]+``, not ``.`` or ``..``
    (``""`` or ``.`` would be the whole output root, ``../x`` or ``/x`` a folder outside it)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ChainError(f"{kind} {name!r}: a name must match [A-Za-z0-9._-]+ and not be '.' or '..' "
                         f"(it names a folder under the output root)")
    return name


def resolve_run_dir(out_root: Path, run_name: str) -> Path:
    """``<output_root>/<run_name>``, refused unless it resolves (symbolic links followed) to a folder
    strictly inside the resolved output root."""
    check_name("run_name", run_name)
    root = out_root if out_root.is_absolute() else ROOT / out_root
    run_dir = root / run_name
    real_root, real = root.resolve(), run_dir.resolve()
    if real == real_root or not real.is_relative_to(real_root):
        raise ChainError(f"run folder {run_dir} resolves to {real}, outside the output root {real_root}")
    return run_dir


def check_earlier_done(run_dir: Path, names: list[str], start: str) -> None:
    """``--from start`` continues a chain: every step before ``start`` must be ``done`` in the run's
    manifest (a failed, killed or never run step would leave later steps reading stale or missing files)."""
    path = run_dir / "manifest.json"
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get("steps") or {}
    except FileNotFoundError:
        raise ChainError(f"--from {start}: {run_dir} holds no run to continue (no manifest.json). In a new "
                         f"session copy the previous run folder first: --resume_dir <its path>") from None
    except (ValueError, AttributeError) as e:
        raise ChainError(f"--from {start}: {path} is not a readable manifest ({e})") from None
    for name in names[:names.index(start)]:
        status = (recorded.get(name) or {}).get("status", "not run")
        if status != "done":
            raise ChainError(f"--from {start!r}: earlier step {name!r} is {status} in {path}; continue with "
                             f"--from {name} (or run the steps before {start!r} first)")


def load_profile(name: str) -> tuple[Path, dict]:
    path = Path(name)
    if not path.suffix:
        path = ROOT / "configs" / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in (ROOT / "configs").glob("*.yaml")))
        raise ChainError(f"profile {name!r}: no file {path} (known profiles: {known})")
    prof = read_yaml(path) or {}
    for key in ("run_name", "steps"):
        if key not in prof:
            raise ChainError(f"{path}: missing key {key!r}")
    names = [s.get("name") for s in prof["steps"]]
    for i, s in enumerate(prof["steps"]):
        if not s.get("name") or bool(s.get("notebook")) == bool(s.get("script")):
            raise ChainError(f"{path}: step {i + 1} needs a 'name' and a 'notebook' (or a 'script')")
        try:
            check_name("step name", s["name"])
        except ChainError as e:
            raise ChainError(f"{path}: step {i + 1}: {e}") from None
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ChainError(f"{path}: step names must be unique, repeated: {', '.join(sorted(dup))}")
    return path, prof


def check_requires(requires, ctx: dict) -> None:
    """A profile's ``requires``: ``{path: what makes it}``, inputs made outside the chain (another profile's
    teacher), checked before the first step so that a missing one is said now, not after an hour."""
    if not requires:
        return
    if not isinstance(requires, dict):
        raise ChainError(f"requires: expected a mapping of path -> what makes it, got {requires!r}")
    missing = [(substitute(str(k), ctx), substitute(str(v), ctx)) for k, v in requires.items()
               if not (ROOT / substitute(str(k), ctx)).exists()]     # relative: to the root, as the steps see it
    if missing:
        raise ChainError("the profile needs what it does not make:\n" +
                         "\n".join(f"  {path}: missing; make it with: {how}" for path, how in missing))


def notebook_path(nb: str) -> Path:
    p = ROOT / "notebooks" / (nb if nb.endswith(".ipynb") else nb + ".ipynb")
    if not p.exists():
        raise ChainError(f"notebook {p.relative_to(ROOT)} does not exist")
    return p


def substitute(value, ctx: dict):
    if isinstance(value, str):
        for k, v in ctx.items():
            value = value.replace("{" + k + "}", str(v))
        return value
    if isinstance(value, list):
        return [substitute(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, ctx) for k, v in value.items()}
    return value


def apply_overrides(steps: list[dict], sets: list[str], declared: dict[str, dict]) -> None:
    """``key=value`` sets a parameter on every step whose notebook declares it;
    ``step.key=value`` on one step. Values are parsed as YAML (numbers, true/false, lists)."""
    for item in sets:
        if "=" not in item:
            raise ChainError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = ".".join(FLAG_SPELLINGS.get(k, k) for k in key.split("."))
        value = load_value(raw) if raw != "" else ""
        step_names = {s["name"] for s in steps}
        if "." in key and key.split(".", 1)[0] in step_names:
            name, param = key.split(".", 1)
            targets = [s for s in steps if s["name"] == name]
            if param not in declared[name]:
                raise ChainError(f"--set {item!r}: notebook {step_source(targets[0])} has no parameter {param!r}")
        else:
            param, targets = key, [s for s in steps if key in declared[s["name"]]]
            if not targets:
                raise ChainError(f"--set {item!r}: no step's notebook has a parameter {key!r}")
        for s in targets:
            s.setdefault("parameters", {})[param] = value


def check_parameters(steps: list[dict], declared: dict[str, dict]) -> None:
    for s in steps:
        unknown = sorted(set(s.get("parameters", {})) - set(declared[s["name"]]))
        if unknown:
            raise ChainError(f"step {s['name']!r} ({step_source(s)}): unknown parameter(s) {', '.join(unknown)}; "
                             f"the notebook declares: {', '.join(sorted(declared[s['name']]))}")


def _kind(value):
    return (bool if isinstance(value, bool) else int if isinstance(value, int) else float if isinstance(value, float)
            else str if isinstance(value, str) else list if isinstance(value, (list, tuple)) else
            dict if isinstance(value, dict) else None)


_KIND_NAME = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
              dict: "a mapping"}


def check_types(steps: list[dict], declared: dict[str, dict]) -> None:
    """Every value has the type of the notebook's own default (null always passes: the stage's
    dataclass decides), checked before the first step runs, so a bad value in step 9 does not cost
    steps 1-8. Defaults that are None say nothing; the stage's dataclass checks those when it is built."""
    for s in steps:
        for k, v in (s.get("parameters") or {}).items():
            try:
                default = ast.literal_eval(declared[s["name"]][k]["default"])
            except (ValueError, SyntaxError, KeyError):
                continue
            want, got = _kind(default), _kind(v)
            if v is None or want is None or got == want or (want is float and got is int):
                continue
            raise ChainError(f"step {s['name']!r} ({step_source(s)}): {k}={v!r} is {_KIND_NAME.get(got, type(v).__name__)}, "
                             f"but the notebook's {k} is {_KIND_NAME[want]} (default {default!r})")


def select(steps: list[dict], only: str | None, start: str | None) -> list[dict]:
    names = [s["name"] for s in steps]
    if only:
        want = [n.strip() for n in only.split(",") if n.strip()]
        bad = [n for n in want if n not in names]
        if bad:
            raise ChainError(f"--only: unknown step(s) {', '.join(bad)}; steps are: {', '.join(names)}")
        return [s for s in steps if s["name"] in want]
    if start:
        if start not in names:
            raise ChainError(f"--from {start!r}: unknown step; steps are: {', '.join(names)}")
        return steps[names.index(start):]
    return steps


def environment() -> dict:
    env = {"python": sys.version.split()[0]}
    for mod in ("torch", "transformers", "peft", "papermill", "faiss", "bitsandbytes"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:
            env[mod] = None
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                           text=True, check=True).stdout.strip()
        env["git_dirty"] = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                               capture_output=True, text=True).stdout.strip())
    except Exception:
        env["git_commit"] = None
    return env


def script_path(script: str) -> Path:
    p = ROOT / script
    if not p.is_file() or p.suffix != ".py":
        raise ChainError(f"script {script} does not exist (a .py file under the repository)")
    return p


def script_module(script: str) -> Optional[str]:
    """The dotted name of a script that is a module of the package (``helpers/...``), else None."""
    rel = script_path(script).relative_to(ROOT)
    return ".".join(rel.with_suffix("").parts) if rel.parts[0] == "helpers" else None


def script_parameters(script: str) -> dict:
    """A script step's parameters as papermill describes a notebook's: ``{flag: {"default": repr}}``,
    from the script's own ``build_parser()`` (so the same checks apply before anything runs)."""
    import importlib
    import importlib.util
    module = script_module(script)
    if module:
        mod = importlib.import_module(module)
    else:
        spec = importlib.util.spec_from_file_location(f"_step_{Path(script).stem}", script_path(script))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    if not hasattr(mod, "build_parser"):
        raise ChainError(f"script {script} has no build_parser(): its parameters cannot be checked")
    return {a.dest: {"default": repr(a.default)} for a in mod.build_parser()._actions if a.dest != "help"}


def step_source(step: dict) -> str:
    return step.get("notebook") or step["script"]


def run_script(step: dict) -> float:
    """A step that is a script (a bench: optional dependencies, no notebook): ``--key value`` per
    parameter, run from the repository root; its output streams here; a failure stops the chain. A module
    of the package (``helpers/...``) runs as ``python -m``, so it imports this checkout's package."""
    module = script_module(step["script"])
    cmd = [sys.executable, *(["-m", module] if module else [str(script_path(step["script"]))])]
    for k, v in (step.get("parameters") or {}).items():
        cmd += [f"--{k}", *([str(x) for x in v] if isinstance(v, list) else [str(v)])]
    print(f"\n=== step {step['name']} ({step['script']})", flush=True)
    t0 = time.time()
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    if rc:
        raise ChainError(f"step {step['name']!r} failed: {step['script']} exited with {rc}")
    return time.time() - t0


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, theirs, ...), read from /proc: a notebook's kernel and the
    torchrun workers it started, whatever session or process group they put themselves in."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def end_descendants(grace: float = 10.0) -> list[int]:
    """A stopped run_all ends what it started: SIGTERM to every descendant (listed first, so workers a
    killed kernel leaves to init are still reached), SIGKILL after ``grace`` seconds. -> the pids."""
    import signal
    procs = descendants(os.getpid())
    for p in procs:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.time() + grace

    def alive(p):
        try:
            os.kill(p, 0)
            with open(f"/proc/{p}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"      # a zombie has ended
        except (ProcessLookupError, OSError):
            return False
    while time.time() < end and any(alive(p) for p in procs):
        time.sleep(0.2)
    for p in procs:
        if alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return procs


def _stop_on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


class _restore:
    """Put the signal handlers back when the chain ends (run_all.main may run inside another program)."""
    def __init__(self, handlers: dict):
        self.handlers = handlers

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        import signal
        for sig, h in self.handlers.items():
            signal.signal(sig, h)
        return False


def run_step(step: dict, run_dir: Path, index: int) -> float:
    if step.get("script"):
        return run_script(step)
    import papermill as pm
    src = notebook_path(step["notebook"])
    out = run_dir / "notebooks" / f"{index:02d}_{step['name']}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"\n=== step {step['name']} ({src.relative_to(ROOT)}) -> {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}",
          flush=True)
    t0 = time.time()
    try:
        pm.execute_notebook(str(src), str(out), parameters=step.get("parameters", {}), cwd=str(ROOT),
                            kernel_name="python3", log_output=True, progress_bar=False,
                            request_save_on_cell_execute=True)
    except pm.PapermillExecutionError as e:
        raise ChainError(f"step {step['name']!r} failed in {src.relative_to(ROOT)}, cell {e.exec_count} "
                         f"(index {e.cell_index}): {e.ename}: {e.evalue}\n  executed copy: {out}") from None
    return time.time() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default=None,
                   help="profile name in configs/ or a YAML path (default: kaggle_eedi on Kaggle, else demo)")
    p.add_argument("--only", help="comma-separated step names to run")
    p.add_argument("--from", dest="start", help="run from this step to the end")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter: key=value (every step that has it) or step.key=value")
    p.add_argument("--var", dest="vars", action="append", default=[], metavar="KEY=VALUE",
                   help="override one of the profile's vars (e.g. --var embedder=/kaggle/input/my-model)")
    p.add_argument("--run_name", help="override the profile's run name (output folder)")
    p.add_argument("--output_root", help="override the profile's output root (default model_output)")
    p.add_argument("--list", action="store_true", help="list the steps and their parameters, run nothing")
    p.add_argument("--time_budget", help="wall-clock budget (11h, 90m, 1h30m, seconds): stop at the last finished "
                   "step (training: epoch) that fits and print how to continue")
    p.add_argument("--resume_dir", help="a previous session's run folder (e.g. /kaggle/input/<notebook>/<run_name>): "
                   "copied, writable, into this run folder before continuing with --from")
    p.add_argument("--print_run_dir", action="store_true", help="print the run folder and exit (make clean-run)")
    a = p.parse_args(argv)
    if a.profile is None:
        a.profile = "kaggle_eedi" if on_kaggle() else "demo"
    try:
        path, prof = load_profile(a.profile)
        run_name = a.run_name if a.run_name is not None else prof["run_name"]
        out_root = Path(a.output_root or prof.get("output_root", "model_output"))
        run_dir = resolve_run_dir(out_root, run_name)
        if a.print_run_dir:
            print(run_dir)
            return 0
        here = {"run_dir": run_dir, "output_root": out_root}
        base = {k: os.path.relpath(v, ROOT) if v.is_relative_to(ROOT) else str(v) for k, v in here.items()}
        ctx = dict(base)                # a var's value may name {run_dir} or {output_root} too
        ctx.update({k: substitute(v, base) for k, v in (prof.get("vars") or {}).items()})
        for item in a.vars:
            key, sep, value = item.partition("=")
            if not sep or key not in (prof.get("vars") or {}):
                raise ChainError(f"--var {item!r}: expected KEY=VALUE with KEY one of the profile's vars: "
                                 f"{', '.join(prof.get('vars') or {}) or '(none)'}")
            ctx[key] = substitute(value, base)
        steps = [dict(s, parameters=canonical_flags(substitute(dict(s.get("parameters") or {}), ctx)))
                 for s in prof["steps"]]
        import papermill as pm
        declared = {s["name"]: pm.inspect_notebook(str(notebook_path(s["notebook"]))) if s.get("notebook")
                    else script_parameters(s["script"]) for s in steps}
        apply_overrides(steps, a.sets, declared)
        check_parameters(steps, declared)
        check_types(steps, declared)
        chosen = select(steps, a.only, a.start)
        if a.list:
            for s in steps:
                mark = "*" if s in chosen else " "
                print(f"{mark} {s['name']:14s} {step_source(s):22s} {json.dumps(s.get('parameters', {}))}")
            return 0
        budget = parse_duration(a.time_budget) if a.time_budget else None
        deadline = time.time() + budget if budget is not None else None
        if a.resume_dir and not (a.start or a.only):
            raise ChainError("--resume_dir continues a run: give --from <step> (or --only) too")
        if a.resume_dir and (run_dir / "manifest.json").exists():
            raise ChainError(f"--resume_dir: {run_dir} already holds a run (manifest.json); continue it with "
                             f"--from alone, or choose another --run_name")
        check_requires(prof.get("requires"), ctx)
        names = [s["name"] for s in steps]
        if a.start and names.index(a.start) > 0:      # the run continued (or copied) must be done up to here
            check_earlier_done(Path(a.resume_dir) if a.resume_dir else run_dir, names, a.start)
        run_dir.mkdir(parents=True, exist_ok=True)
        # a read-only descriptor: flock works on it, and a lock file copied read-only still opens.
        # Taken before --resume_dir's copy: two sessions never copy into one folder at once.
        lock = os.fdopen(os.open(run_dir / ".run_all.lock", os.O_RDONLY | os.O_CREAT, 0o644))
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ChainError(f"another run_all.py is already running on {run_dir}; wait for it or "
                             "choose another --run_name") from None
        if a.resume_dir:
            if (run_dir / "manifest.json").exists():
                raise ChainError(f"--resume_dir: {run_dir} already holds a run (manifest.json)")
            copy_run(Path(a.resume_dir), run_dir)
        manifest_path = run_dir / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        manifest.update({"profile": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
                         "run_name": run_name, "environment": environment(),
                         "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        manifest.setdefault("steps", {})
        manifest.pop("stopped", None)
        if budget is not None:
            manifest["time_budget_s"] = budget
        t_all, times = time.time(), []
        index = {s["name"]: i for i, s in enumerate(steps)}
        report = run_dir / ".stop_report.jsonl"
        stop = None
        import signal
        before = {sig: signal.signal(sig, _stop_on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
        with budget_env(deadline, report), _restore(before):   # the kernels (and torchrun) inherit the budget
            for s in chosen:
                if deadline is not None:
                    left = deadline - time.time()
                    prev = manifest["steps"].get(s["name"], {})
                    est = prev.get("wall_s") if prev.get("status") == "done" else None
                    if left <= 0 or (step_source(s) not in INTERRUPTIBLE and est and est > left):
                        stop = (s["name"], f"{left / 3600:.2f} h of the time budget left"
                                + (f", and step {s['name']!r} took {est / 3600:.2f} h last time" if est else ""))
                        break
                report.unlink(missing_ok=True)
                manifest["steps"][s["name"]] = {"notebook": step_source(s), "parameters": s.get("parameters", {}),
                                                "status": "running"}
                write_json(manifest_path, manifest)
                try:
                    wall = run_step(s, run_dir, index[s["name"]])
                except BaseException as e:
                    if not isinstance(e, ChainError):    # stopped (Ctrl-C, SIGTERM, SIGHUP): end what it started,
                        end_descendants()                # or torchrun workers go on writing with the lock free
                    manifest["steps"][s["name"]]["status"] = "failed"
                    manifest["steps"][s["name"]]["error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
                    write_json(manifest_path, manifest)
                    raise
                times.append((s["name"], wall))
                why = read_stop_report(report)
                if why is not None:
                    manifest["steps"][s["name"]].update(status="stopped", wall_s=round(wall, 1), stopped=why)
                    write_json(manifest_path, manifest)
                    stop = (s["name"], why.get("reason", "stopped at the deadline"))
                    break
                manifest["steps"][s["name"]].update(status="done", wall_s=round(wall, 1))
                write_json(manifest_path, manifest)
        total = time.time() - t_all
        manifest["total_wall_s"] = round(total, 1)
        write_json(manifest_path, manifest)
        print("\nwall time per step:")
        for name, w in times:
            print(f"  {name:16s} {w:8.1f} s")
        print(f"  {'total':16s} {total:8.1f} s\nrun folder: {run_dir}")
        if stop is not None:
            cmd = continue_command(a.profile, stop[0], run_name, a.time_budget)
            manifest["stopped"] = {"step": stop[0], "reason": stop[1], "continue": cmd}
            write_json(manifest_path, manifest)
            print(f"\ntime budget: stopped at step {stop[0]!r} ({stop[1]}). Everything before it is finished "
                  f"and saved in {run_dir}.\nContinue with:\n  {cmd}\nIn a new session, first attach this "
                  f"session's output and add --resume_dir <its copy of {run_name}> (README \"Two sessions\").",
                  flush=True)
        return 0
    except ChainError as e:
        print(f"run_all: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
