"""Run one workflow file without a server: `python server.py run WORKFLOW.json [--set 3.seed=42] [--output DIR]`.

The file may be an API prompt, a UI (editor) workflow, a `{"prompt": ...}` request body, or a PNG
that carries its workflow. `--set NODE.INPUT=VALUE` overrides an input (NODE is a node id, or a
title or class_type that names one node; VALUE is read as JSON when it parses, else as text).
Progress goes to stderr (a tqdm bar), validation errors are printed per node, and the paths of
the written images are printed on stdout at the end. Exit status: 0 success, 1 the run failed,
2 the workflow or the command line is invalid, 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .cache import OutputCache
from .context import Interrupt
from .executor import ExecutionResult, Executor
from .registry import NodeRegistry
from .ui_workflow import WorkflowConversionError, is_ui_workflow, to_api
from .validation import ValidationOutcome, upstream_closure, validate_prompt
from .workflow import is_link

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130

# What server.py provides: (registry, folders, runtime) for the given options.
Setup = Callable[[Any], tuple[NodeRegistry, Any, Any]]


class WorkflowFileError(ValueError):
    """A workflow file that cannot be read, converted or overridden; the message says why."""


@dataclass
class Override:
    """One `--set NODE.INPUT=VALUE`."""

    node: str
    input: str
    value: Any
    text: str

    @classmethod
    def parse(cls, text: str) -> Override:
        target, sep, raw = text.partition("=")
        node, dot, name = target.rpartition(".")
        if not sep or not dot or not node or not name:
            raise WorkflowFileError(f"--set {text!r} must look like NODE.INPUT=VALUE (e.g. 3.seed=42)")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        return cls(node, name, value, text)


def read_workflow(path: Path) -> Any:
    """The JSON of a workflow file, or of the `prompt`/`workflow` text chunk of a PNG."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WorkflowFileError(f"workflow file {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        import io  # noqa: PLC0415

        from PIL import Image  # noqa: PLC0415

        with Image.open(io.BytesIO(data)) as image:
            text = getattr(image, "text", {})
        chunk = text.get("prompt") or text.get("workflow")
        if not chunk:
            raise WorkflowFileError(f"PNG {str(path)!r} carries no 'prompt' or 'workflow' text chunk")
        data = chunk.encode()
    try:
        return json.loads(data)
    except ValueError as exc:
        raise WorkflowFileError(f"workflow file {str(path)!r} is not valid JSON: {exc}") from exc


def to_prompt(data: Any, registry: NodeRegistry) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(API prompt, the UI workflow it came from or None) for any accepted file shape."""
    if isinstance(data, dict) and "prompt" in data and isinstance(data["prompt"], dict) and "nodes" not in data:
        data = data["prompt"]
    if is_ui_workflow(data):
        return to_api(data, registry.object_info()), data
    if not isinstance(data, dict):
        raise WorkflowFileError(f"a workflow must be a JSON object, got {type(data).__name__}")
    return to_api(data, {}), None


def find_node(prompt: Mapping[str, Any], ref: str) -> str:
    """The id of the node a --set names: its id, or a title or class_type that only one node has."""
    if ref in prompt:
        return ref
    matches = [nid for nid, n in prompt.items() if isinstance(n, dict) and
               (n.get("class_type") == ref or (n.get("_meta") or {}).get("title") == ref)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(f"{nid} ({n.get('class_type')})" for nid, n in prompt.items() if isinstance(n, dict))
    if matches:
        raise WorkflowFileError(f"--set node {ref!r} is ambiguous: nodes {', '.join(matches)} match; use an id")
    raise WorkflowFileError(f"--set node {ref!r} is not in the workflow; nodes: {known}")


def apply_overrides(prompt: dict[str, Any], overrides: Sequence[Override]) -> dict[str, Any]:
    """A copy of prompt with the overrides applied (a value that looks like a link stays a literal)."""
    result = json.loads(json.dumps(prompt))
    for override in overrides:
        node_id = find_node(result, override.node)
        inputs = result[node_id].setdefault("inputs", {})
        value = {"__value__": override.value} if is_link(override.value) else override.value
        inputs[override.input] = value
    return result


def print_validation(outcome: ValidationOutcome, out: TextIO) -> None:
    """Every validation error, grouped by node."""
    print("The workflow is invalid:", file=out)
    if outcome.error and not outcome.node_errors:
        print(f"  {outcome.error.get('details') or outcome.error.get('message')}", file=out)
    print_errors(outcome, out)


def print_errors(outcome: ValidationOutcome, out: TextIO) -> None:
    """The per-node errors of a validation."""
    for node_id, errors in outcome.node_errors.items():
        class_type = outcome.nodes[node_id].class_type if node_id in outcome.nodes else "?"
        print(f"  node {node_id} ({class_type}):", file=out)
        for error in errors:
            print(f"    - {error.details}", file=out)


@dataclass
class ProgressDisplay:
    """The terminal view of a run: a bar over nodes and one over the running node's steps."""

    total: int
    stream: TextIO
    enabled: bool = True
    class_types: dict[str, str] = field(default_factory=dict)
    _nodes: Any = None
    _steps: Any = None
    _running: str | None = None

    def __post_init__(self) -> None:
        if self.enabled:
            from tqdm import tqdm  # noqa: PLC0415

            self._tqdm = tqdm
            self._nodes = tqdm(total=self.total, desc="nodes", unit="node", file=self.stream, position=0,
                               dynamic_ncols=True)

    def emit(self, event: str, data: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if event == "execution_cached":
            self._nodes.total = max(0, self.total - len(data.get("nodes", [])))
            self._nodes.refresh()
        elif event == "executing":
            self._finish_node()
            node = str(data.get("node"))
            self._running = node
            self._nodes.set_description(f"{self.class_types.get(node, '?')} {node}")
        elif event == "progress":
            total = data.get("max") or 1
            if self._steps is None:
                self._steps = self._tqdm(total=total, desc="steps", unit="step", file=self.stream, position=1,
                                         leave=False, dynamic_ncols=True)
            self._steps.total = total
            self._steps.n = int(data.get("value") or 0)
            self._steps.refresh()
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            self._finish_node(done=event == "execution_success")

    def _finish_node(self, done: bool = True) -> None:
        if self._running is not None and done:
            self._nodes.update(1)
        self._running = None
        if self._steps is not None:
            self._steps.close()
            self._steps = None

    def close(self) -> None:
        if self.enabled:
            self._finish_node(done=False)
            self._nodes.close()


def written_files(result: ExecutionResult, folders: Any) -> list[Path]:
    """Paths of the files the output nodes reported (`images`, `gifs`, ... records with a filename)."""
    paths: list[Path] = []
    for ui in result.outputs.values():
        for records in ui.values():
            if not isinstance(records, list):
                continue
            for record in records:
                if isinstance(record, dict) and isinstance(record.get("filename"), str):
                    base = Path(folders.get_directory_by_type(record.get("type") or "output"))
                    paths.append(base / (record.get("subfolder") or "") / record["filename"])
    return paths


def run_prompt(prompt: dict[str, Any], registry: NodeRegistry, *, extra_data: dict[str, Any] | None = None,
               progress: bool = True, err: TextIO = sys.stderr, executor: Executor | None = None,
               interrupt: Interrupt | None = None) -> tuple[ExecutionResult, ValidationOutcome]:
    """Validate and run an API prompt in this thread with a progress display; never raises for node errors."""
    outcome = validate_prompt(prompt, registry)
    if not outcome.ok:
        return ExecutionResult("", "invalid", validation=outcome, error=outcome.response()), outcome
    if outcome.node_errors:  # some outputs are invalid: the others run, but say what is skipped
        print("warning: outputs that failed validation are skipped:", file=err)
        print_errors(outcome, err)
    executor = executor or Executor(registry, OutputCache("none"))
    display = ProgressDisplay(len(upstream_closure(outcome.nodes, outcome.outputs)), err, progress,
                              {nid: n.class_type for nid, n in outcome.nodes.items()})
    try:
        result = executor.execute(prompt, str(uuid.uuid4()), extra_data=extra_data or {}, emit=display.emit,
                                  interrupt=interrupt)
    finally:
        display.close()
    return result, outcome


def build_parser(prog: str = "server.py run") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Run one workflow (API or UI format, or a PNG that "
                                                       "carries one) without a server.")
    p.add_argument("workflow", type=Path, help="the workflow file (.json, or a .png saved by diffloom/ComfyUI)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="override an input, e.g. --set 3.seed=42 or --set KSampler.steps=4 (repeatable)")
    p.add_argument("--output", type=Path, default=None, metavar="DIR", help="write outputs into DIR")
    p.add_argument("--base-directory", type=Path, default=None, metavar="DIR")
    p.add_argument("--input-directory", type=Path, default=None, metavar="DIR",
                   help="where LoadImage reads from (default: an input/ folder beside the workflow file if there "
                        "is one, as for workflows/*.json, else BASE/input)")
    p.add_argument("--extra-model-paths-config", type=Path, action="append", default=[], metavar="YAML")
    p.add_argument("--cpu", action="store_true", help="compute on the CPU even if a GPU is present")
    p.add_argument("--disable-all-custom-nodes", action="store_true")
    p.add_argument("--disable-metadata", action="store_true", help="write no workflow into saved images")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--extra-nodes", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--skip-builtin-nodes", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str], *, setup: Setup, default_base: Path | None = None, prog: str = "server.py run",
         out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The `run` command; `setup(options)` builds (registry, folders, runtime) as the server would."""
    from .server.options import ServerOptions  # noqa: PLC0415 - shares the server's folder defaults

    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser(prog).parse_args(list(argv))
    base = (args.base_directory or default_base or Path.cwd()).resolve()
    beside = args.workflow.resolve().parent / "input"
    input_directory = args.input_directory or (beside if beside.is_dir() else None)
    options = ServerOptions(base_directory=base, output_directory=args.output, input_directory=input_directory,
                            extra_model_paths_config=list(args.extra_model_paths_config), cpu=args.cpu,
                            disable_all_custom_nodes=args.disable_all_custom_nodes,
                            disable_metadata=args.disable_metadata, extra_nodes=list(args.extra_nodes),
                            skip_builtin_nodes=args.skip_builtin_nodes)
    try:
        overrides = [Override.parse(text) for text in args.sets]
        data = read_workflow(args.workflow)
    except WorkflowFileError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_INVALID
    registry, folders, _runtime = setup(options)
    try:
        prompt, ui_workflow = to_prompt(data, registry)
        prompt = apply_overrides(prompt, overrides)
    except WorkflowConversionError as exc:
        print("The workflow cannot be converted to the API format:", file=err)
        for problem in exc.problems:
            print(f"  - {problem}", file=err)
        return EXIT_INVALID
    except WorkflowFileError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_INVALID
    extra_data = {"extra_pnginfo": {"workflow": ui_workflow}} if ui_workflow is not None else {}
    interrupt = Interrupt()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: Any) -> None:
        # Only set flags here: writing to stderr while tqdm writes to it raises a reentrant-call error.
        if interrupt.is_set():  # a second Ctrl-C: stop now
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        interrupt.set()

    try:
        signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread
        previous = None
    try:
        result, outcome = run_prompt(prompt, registry, extra_data=extra_data, progress=not args.no_progress,
                                     err=err, interrupt=interrupt)
    except KeyboardInterrupt:
        print("aborted", file=err)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if result.status == "invalid":
        print_validation(outcome, err)
        return EXIT_INVALID
    if result.status == "interrupted":
        print("interrupted (Ctrl-C)" if interrupt.is_set() else "interrupted", file=err)
        return EXIT_INTERRUPTED
    if result.status == "error":
        error = result.error or {}
        print(f"node {error.get('node_id')} ({error.get('node_type')}) failed: {error.get('exception_message')}",
              file=err)
        tb = error.get("traceback") or []
        if tb:
            print("".join(tb[-3:]).rstrip(), file=err)
        return EXIT_FAILED
    files = written_files(result, folders)
    print(f"done in {result.duration:.2f} s: {len(result.executed)} node(s) run, {len(files)} file(s) written",
          file=err)
    for path in files:
        print(path, file=out)
    return EXIT_OK
