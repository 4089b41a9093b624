"""The headless runner: API, UI, request-body and PNG files, --set overrides, errors per node, exit codes."""
from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

import nodes.folders
import nodes.runtime
from graph.registry import NodeRegistry
from graph.runner import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, Override, main
from graph.server.options import ServerOptions
from nodes.folders import FolderPaths
from tests.server import server_nodes
from tests.server.server_harness import ROOT, image_prompt, ui_workflow
from tests.workflows.conftest import WORKFLOWS, copy_inputs, tiny_version


def setup(options: ServerOptions) -> tuple[NodeRegistry, FolderPaths, None]:
    """What server.py's setup does, with the pure-Python test nodes instead of the built-in ones."""
    folders = FolderPaths(options.base_directory, output_dir=options.output_dir, create_dirs=True)
    nodes.runtime.configure(folders)
    registry = NodeRegistry()
    registry.add_module(server_nodes)
    return registry, folders, None


@pytest.fixture(autouse=True)
def own_node_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """The node runtime is process-wide: give it back as it was after each test."""
    monkeypatch.setattr(nodes.runtime, "_runtime", None)
    monkeypatch.setattr(nodes.folders, "_default", None)


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """main() with the test nodes; returns (exit code, stdout lines, stderr)."""

    def invoke(*argv: str) -> tuple[int, list[str], str]:
        code = main(["--base-directory", str(tmp_path / "base"), "--no-progress", *argv], setup=setup)
        captured = capsys.readouterr()
        return code, captured.out.splitlines(), captured.err

    return invoke


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_api_file_runs_and_prints_written_images(run: Any, tmp_path: Path) -> None:
    workflow = write(tmp_path / "api.json", image_prompt(prefix="cli"))
    code, out, err = run(str(workflow), "--output", str(tmp_path / "out"))
    assert code == EXIT_OK, err
    assert len(out) == 1
    written = Path(out[0])
    assert written.parent == tmp_path / "out" and written.name.startswith("cli_")
    assert Image.open(written).size == (8, 8)
    assert "3 node(s) run, 1 file(s) written" in err


def test_overrides_by_id_and_by_class_type(run: Any, tmp_path: Path) -> None:
    workflow = write(tmp_path / "api.json", image_prompt(prefix="before"))
    code, out, err = run(str(workflow), "--output", str(tmp_path / "out"), "--set", "3.filename_prefix=after",
                         "--set", "TestImage.width=5", "--set", "1.value=1.0")
    assert code == EXIT_OK, err
    image = Image.open(out[0])
    assert Path(out[0]).name.startswith("after_") and image.size == (5, 8) and image.getpixel((0, 0)) == (255,) * 3


def test_override_parsing() -> None:
    assert Override.parse("3.seed=42").value == 42
    assert Override.parse("3.text=hello world").value == "hello world"
    assert Override.parse('3.text="42"').value == "42"
    assert Override.parse("a.b.steps=[1, 2]") == Override("a.b", "steps", [1, 2], "a.b.steps=[1, 2]")


@pytest.mark.parametrize("sets, message", [
    (["nonsense"], "must look like NODE.INPUT=VALUE"),
    (["9.width=3"], "--set node '9' is not in the workflow; nodes: 1 (TestImage)"),
])
def test_bad_overrides_exit_2(run: Any, tmp_path: Path, sets: list[str], message: str) -> None:
    workflow = write(tmp_path / "api.json", image_prompt())
    argv = [str(workflow)]
    for item in sets:
        argv += ["--set", item]
    code, _, err = run(*argv)
    assert code == EXIT_INVALID and message in err


def test_ui_workflow_is_converted(run: Any, tmp_path: Path) -> None:
    workflow = write(tmp_path / "ui.json", ui_workflow())
    code, out, err = run(str(workflow), "--output", str(tmp_path / "out"))
    assert code == EXIT_OK, err
    assert Path(out[0]).name.startswith("ui_")


def test_request_body_and_png_files(run: Any, tmp_path: Path) -> None:
    body = write(tmp_path / "body.json", {"prompt": image_prompt(prefix="body"), "client_id": "x"})
    code, out, _ = run(str(body), "--output", str(tmp_path / "out"))
    assert code == EXIT_OK and Path(out[0]).name.startswith("body_")
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(image_prompt(prefix="frompng")))
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, "PNG", pnginfo=info)
    (tmp_path / "saved.png").write_bytes(buffer.getvalue())
    code, out, _ = run(str(tmp_path / "saved.png"), "--output", str(tmp_path / "out"))
    assert code == EXIT_OK and Path(out[0]).name.startswith("frompng_")
    plain = io.BytesIO()
    Image.new("RGB", (2, 2)).save(plain, "PNG")
    (tmp_path / "plain.png").write_bytes(plain.getvalue())
    code, _, err = run(str(tmp_path / "plain.png"))
    assert code == EXIT_INVALID and "carries no 'prompt' or 'workflow'" in err


def test_validation_errors_are_printed_per_node(run: Any, tmp_path: Path) -> None:
    prompt = image_prompt()
    prompt["1"]["inputs"]["width"] = 0
    prompt["2"]["inputs"]["steps"] = "many"
    code, out, err = run(str(write(tmp_path / "bad.json", prompt)))
    assert code == EXIT_INVALID and out == []
    assert "node 1 (TestImage):" in err and "input 'width' is 0, must be >= 1" in err
    assert "node 2 (TestSlow):" in err and "input 'steps' is 'many', must be INT" in err


def test_failing_node_exits_1_naming_it(run: Any, tmp_path: Path) -> None:
    code, out, err = run(str(write(tmp_path / "fail.json", image_prompt(fail=True))))
    assert code == EXIT_FAILED and out == []
    assert "node 4 (TestFail) failed: planned failure" in err


@pytest.mark.parametrize("content, message", [
    (None, "cannot be read"),
    ("{oops", "is not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({"nodes": [{"id": 1, "type": "Nope", "inputs": [], "outputs": []}], "links": []}),
     "cannot be converted"),
])
def test_unreadable_files_exit_2(run: Any, tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "wf.json"
    if content is not None:
        path.write_text(content)
    code, _, err = run(str(path))
    assert code == EXIT_INVALID and message in err


def test_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workflow = write(tmp_path / "api.json", image_prompt(steps=3))
    assert main([str(workflow), "--base-directory", str(tmp_path)], setup=setup) == EXIT_OK
    captured = capsys.readouterr()
    assert "TestSave 3" in captured.err and "3/3" in captured.err and "steps" in captured.err
    assert captured.out.strip().endswith(".png") and "\r" not in captured.out


def server_run(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(ROOT / "server.py"), "run", *args, "--base-directory", str(tmp_path),
                             "--extra-nodes", "tests.server.server_nodes", "--skip-builtin-nodes",
                             "--disable-all-custom-nodes"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"GOMP_SPINCOUNT": "0", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def test_inputs_come_from_the_input_folder_beside_the_workflow(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """As for workflows/*.json and workflows/input/: a shipped workflow finds its pictures without flags."""
    seen: list[Path] = []

    def capture(options: ServerOptions) -> tuple[NodeRegistry, FolderPaths, None]:
        seen.append(options.input_dir)
        return setup(options)

    alone, shipped = tmp_path / "alone", tmp_path / "shipped"
    (shipped / "input").mkdir(parents=True)
    alone.mkdir()
    base = tmp_path / "base"
    for folder, extra in ((shipped, []), (alone, []), (shipped, ["--input-directory", str(tmp_path / "mine")])):
        workflow = write(folder / "wf.json", image_prompt(prefix="inputs"))
        assert main([str(workflow), "--base-directory", str(base), "--no-progress", *extra], setup=capture) == EXIT_OK
    capsys.readouterr()
    assert seen == [shipped / "input", base / "input", tmp_path / "mine"]


def test_server_py_run_end_to_end(tmp_path: Path) -> None:
    workflow = write(tmp_path / "wf.json", image_prompt(prefix="door"))
    proc = server_run(tmp_path, str(workflow), "--set", "2.steps=2", "--output", str(tmp_path / "out"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_OK, err
    assert Path(out.strip()).is_file() and Path(out.strip()).parent == tmp_path / "out"


def test_ctrl_c_interrupts_the_run(tmp_path: Path) -> None:
    workflow = write(tmp_path / "slow.json", image_prompt(steps=500, delay=0.05))
    proc = server_run(tmp_path, str(workflow))
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + 60
    while "steps" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.read(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, seen + err
    assert "interrupted" in err


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_runner_runs_every_workflow_file(path: Path, tmp_path: Path, model_base: Path, registry: NodeRegistry,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Each file of workflows/ (on the tiny models) through the runner: exit 0 and the images it names exist."""
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    copy_inputs(input_dir)

    def real_setup(options: ServerOptions) -> tuple[NodeRegistry, FolderPaths, None]:
        folders = FolderPaths(model_base, input_dir=input_dir, output_dir=options.output_dir,
                              temp_dir=tmp_path / "temp", create_dirs=True)
        nodes.runtime.configure(folders)
        return registry, folders, None

    tiny = write(tmp_path / path.name, tiny_version(json.loads(path.read_text())))
    code = main([str(tiny), "--output", str(tmp_path / "out"), "--no-progress"], setup=real_setup)
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    assert "skipped" not in captured.err, captured.err  # every output of the file ran
    written = [Path(line) for line in captured.out.splitlines()]
    assert written and all(p.is_file() for p in written)
    assert all(p.is_relative_to(tmp_path / "out") or p.is_relative_to(tmp_path / "temp") for p in written)
