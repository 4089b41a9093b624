"""server.py's flags: ComfyUI's names, our additions, clear errors for unknown flags, and the real start-up path."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from graph.server.options import APP_ROOT, MB, ServerOptions, build_parser, parse_server_args

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_bind_loopback_with_comfyui_port(tmp_path: Path) -> None:
    options = parse_server_args([], default_base=tmp_path)
    assert options.listen == ["127.0.0.1"] and options.port == 8188
    assert options.listens_on_loopback_only()
    assert options.cache_mode == "lru" and options.cache_max_bytes == 2 << 30 and options.cache_max_entries is None
    assert options.max_upload_size == 100 * MB
    assert options.output_dir == tmp_path / "output" and options.user_dir == tmp_path / "user"
    assert options.database_path == tmp_path / "user" / "diffloom.db"
    assert options.web_root == APP_ROOT / "web"  # the editor ships with diffloom, not with the data
    assert options.workflows_dir == APP_ROOT / "workflows"
    assert options.auth_token is None and options.enable_cors_header is None


def test_flags_map_to_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFLOOM_AUTH_TOKEN", "from-env")
    options = parse_server_args([
        "--listen", "--port", "9000", "--base-directory", str(tmp_path), "--output-directory", "/o",
        "--input-directory", "/i", "--temp-directory", "/t", "--user-directory", "/u",
        "--extra-model-paths-config", "a.yaml", "--extra-model-paths-config", "b.yaml", "--cpu",
        "--cache-lru", "10", "--cache-max-bytes", "512M", "--max-upload-size", "5", "--enable-cors-header",
        "--preview-method", "latent2rgb", "--disable-all-custom-nodes", "--disable-metadata",
        "--front-end-root", "/fe", "--verbose", "--quick-test-for-ci"])
    assert options.listen == ["0.0.0.0", "::"] and not options.listens_on_loopback_only()
    assert options.port == 9000 and options.base_directory == tmp_path.resolve()
    assert (options.output_dir, options.input_dir, options.temp_dir, options.user_dir) == (
        Path("/o"), Path("/i"), Path("/t"), Path("/u"))
    assert options.extra_model_paths_config == [Path("a.yaml"), Path("b.yaml")]
    assert options.cpu and options.cache_mode == "lru" and options.cache_max_entries == 10
    assert options.cache_max_bytes == 512 * MB and options.max_upload_size == 5 * MB
    assert options.enable_cors_header == "*" and options.preview_method == "latent2rgb"
    assert options.disable_all_custom_nodes and options.disable_metadata and options.quick_test_for_ci
    assert options.web_root == Path("/fe") and options.verbose == "DEBUG" and options.auth_token == "from-env"
    assert parse_server_args(["--auth-token", "flag"]).auth_token == "flag"


@pytest.mark.parametrize("flag, mode", [("--cache-none", "none"), ("--cache-classic", "classic")])
def test_cache_modes(flag: str, mode: str) -> None:
    assert parse_server_args([flag]).cache_mode == mode


def test_listen_lists_and_sizes() -> None:
    assert parse_server_args(["--listen", "127.0.0.1,::1"]).listens_on_loopback_only()
    assert not parse_server_args(["--listen", "127.0.0.1,192.168.1.5"]).listens_on_loopback_only()
    assert parse_server_args(["--cache-max-bytes", "0"]).cache_max_bytes is None
    assert parse_server_args(["--cache-max-bytes", "1.5GiB"]).cache_max_bytes == int(1.5 * 2**30)


@pytest.mark.parametrize("argv, message", [
    (["--prot", "80"], "unknown flag --prot (did you mean --port?)"),
    (["--cache-none", "--cache-classic"], "not allowed with argument"),
    (["--port", "99999"], "must be between 0 and 65535"),
    (["--cache-lru", "0"], "must be >= 1"),
    (["--cache-max-bytes", "lots"], "must be a number of bytes"),
    (["--preview-method", "magic"], "invalid choice"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_bad_flags_stop_with_a_clear_message(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_options_are_plain_data(tmp_path: Path) -> None:
    options = ServerOptions(base_directory=tmp_path, database=tmp_path / "q.db")
    assert options.database_path == tmp_path / "q.db"


def test_server_py_unknown_flag_exits_2() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "server.py"), "--listne", "0.0.0.0"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2
    assert "unknown flag --listne (did you mean --listen?)" in done.stderr


def test_quick_test_for_ci_loads_then_exits(tmp_path: Path) -> None:
    # (the built-in nodes load in test_comfyui_client.py's real server; here only the test nodes, for speed)
    done = subprocess.run([sys.executable, str(ROOT / "server.py"), "--quick-test-for-ci", "--skip-builtin-nodes",
                           "--extra-nodes", "tests.server.server_nodes", "--base-directory", str(tmp_path),
                           "--disable-all-custom-nodes"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={"GOMP_SPINCOUNT": "0", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "diffloom: 5 node types loaded; quick test done" in done.stdout
    assert "listening" not in done.stdout
    assert (tmp_path / "output").is_dir() and (tmp_path / "models" / "checkpoints").is_dir()
