"""The server's command-line flags, named as ComfyUI names them where it has them.

`parse_server_args(argv)` gives a `ServerOptions`; tests build `ServerOptions(...)` directly.
Unknown flags stop the program with the closest known flag suggested.
"""
from __future__ import annotations

import argparse
import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

CacheMode = Literal["lru", "classic", "none"]
PREVIEW_METHODS = ("none", "auto", "latent2rgb", "taesd")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TOKEN_ENV = "DIFFLOOM_AUTH_TOKEN"
RAY_ADDRESS_ENV = "DIFFLOOM_RAY_ADDRESS"
DEVICE_PATTERN = re.compile(r"^(cpu|mps|cuda(:\d+)?|xpu(:\d+)?)$")
DEFAULT_CACHE_BYTES = 2 << 30
MB = 1024 * 1024

# The application's own files (the editor, the ready workflows), wherever the data lives.
APP_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServerOptions:
    """Everything the server needs to know from the command line."""

    listen: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    port: int = 8188
    base_directory: Path = field(default_factory=lambda: Path(__file__).resolve().parents[2])
    output_directory: Path | None = None
    input_directory: Path | None = None
    temp_directory: Path | None = None
    user_directory: Path | None = None
    extra_model_paths_config: list[Path] = field(default_factory=list)
    database: Path | None = None
    workflows_directory: Path | None = None
    cpu: bool = False
    cache_mode: CacheMode = "lru"
    cache_max_entries: int | None = None
    cache_max_bytes: int | None = DEFAULT_CACHE_BYTES
    max_upload_size: int = 100 * MB
    enable_cors_header: str | None = None
    preview_method: str = "auto"
    preview_size: int = 512
    disable_all_custom_nodes: bool = False
    whitelist_custom_nodes: tuple[str, ...] | None = None
    deny_custom_nodes: tuple[str, ...] = ()
    disable_metadata: bool = False
    front_end_root: Path | None = None
    verbose: str = "INFO"
    quick_test_for_ci: bool = False
    auth_token: str | None = None
    history_max: int = 10_000
    requeue_on_crash: bool = False
    extra_nodes: list[str] = field(default_factory=list)
    skip_builtin_nodes: bool = False
    # Scale-out (graph/server/workers): worker processes on this machine, or Ray actors.
    devices: list[str] = field(default_factory=list)
    ray_address: str | None = None
    ray_workers: int | None = None
    ray_gpus_per_worker: float | None = None
    ray_cpus_per_worker: float = 1.0

    @property
    def output_dir(self) -> Path:
        return Path(self.output_directory or self.base_directory / "output")

    @property
    def input_dir(self) -> Path:
        return Path(self.input_directory or self.base_directory / "input")

    @property
    def temp_dir(self) -> Path:
        return Path(self.temp_directory or self.base_directory / "temp")

    @property
    def user_dir(self) -> Path:
        return Path(self.user_directory or self.base_directory / "user")

    @property
    def models_dir(self) -> Path:
        return self.base_directory / "models"

    @property
    def database_path(self) -> Path:
        """Where the durable queue and history live: `<user dir>/diffloom.db` unless given."""
        return Path(self.database or self.user_dir / "diffloom.db")

    @property
    def workflows_dir(self) -> Path:
        """The ready workflows the editor lists (GET /workflows)."""
        return Path(self.workflows_directory or APP_ROOT / "workflows")

    @property
    def web_root(self) -> Path:
        return Path(self.front_end_root or APP_ROOT / "web")

    def listens_on_loopback_only(self) -> bool:
        return all(is_loopback_host(host) for host in self.listen)


def is_loopback_host(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 / ::1 addresses (with or without brackets)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'2G', '512MB', '1.5GiB' or a plain number of bytes."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"size {text!r} must be a number of bytes or end in K, M, G or T "
                                         "(like 4G or 512MB)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "")[:1].lower()])


def _number(convert: Callable[[str], float], what: str, accept: Callable[[float], bool], rule: str,
            ) -> Callable[[str], Any]:
    """An argparse type: `text` read by `convert` (int or float) and checked by `accept`; errors name the rule."""
    kind = "a whole number" if convert is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}{text!r} is not {kind}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{what}{value} {rule}")
        return value

    return parse


_positive_int = _number(int, "", lambda v: v >= 1, "must be >= 1")
_port = _number(int, "port ", lambda v: 0 <= v <= 65535, "must be between 0 and 65535 (0 picks a free port)")
_share = _number(float, "", lambda v: v >= 0, "must be >= 0")
_upload_mb = _number(float, "upload size ", lambda v: v > 0, "MB must be > 0")


def _devices(text: str) -> list[str]:
    """'cuda:0,cuda:1' or 'cpu,cpu': one worker process per entry."""
    devices = [d.strip().lower() for d in text.split(",") if d.strip()]
    if not devices:
        raise argparse.ArgumentTypeError("--devices needs at least one device, like cuda:0,cuda:1 or cpu,cpu")
    for device in devices:
        if not DEVICE_PATTERN.match(device):
            raise argparse.ArgumentTypeError(f"device {device!r} must be cpu, mps, cuda, cuda:N or xpu:N")
    return devices


class _Parser(argparse.ArgumentParser):
    """argparse with a clearer message for unknown flags (it names the closest known one)."""

    def error(self, message: str) -> NoReturn:
        match = re.search(r"unrecognized arguments: (.+)", message)
        if match:
            known = [opt for action in self._actions for opt in action.option_strings]
            hints = []
            for arg in match.group(1).split():
                if arg.startswith("-"):
                    close = difflib.get_close_matches(arg.split("=")[0], known, n=1)
                    hints.append(f"unknown flag {arg}" + (f" (did you mean {close[0]}?)" if close else ""))
                else:
                    hints.append(f"unexpected argument {arg!r}")
            message = "; ".join(hints) + ". See --help for the flags diffloom knows."
        super().error(message)


def build_parser(prog: str = "server.py") -> argparse.ArgumentParser:
    """The parser for `python server.py [flags]`."""
    p = _Parser(prog=prog, description="diffloom: serve the node-graph engine over HTTP and websockets "
                                       "(ComfyUI's API). `python server.py run WORKFLOW.json` runs one "
                                       "workflow without a server.")
    net = p.add_argument_group("network")
    net.add_argument("--listen", nargs="?", const="0.0.0.0,::", default="127.0.0.1", metavar="IP",
                     help="addresses to listen on, comma-separated (default 127.0.0.1; the bare flag means "
                          "all interfaces)")
    net.add_argument("--port", type=_port, default=8188, help="port (default 8188; 0 picks a free one)")
    net.add_argument("--enable-cors-header", nargs="?", const="*", default=None, metavar="ORIGIN",
                     help="allow cross-origin requests from ORIGIN (default '*'); this turns the origin check off")
    net.add_argument("--max-upload-size", type=_upload_mb, default=100.0, metavar="MB",
                     help="largest upload in megabytes (default 100)")
    net.add_argument("--auth-token", default=None, metavar="TOKEN",
                     help=f"require 'Authorization: Bearer TOKEN' on every route (or set {TOKEN_ENV})")
    dirs = p.add_argument_group("folders")
    dirs.add_argument("--base-directory", type=Path, default=None, metavar="DIR",
                      help="root of models/, output/, input/, temp/ and user/ (default: the diffloom folder)")
    dirs.add_argument("--output-directory", type=Path, default=None, metavar="DIR")
    dirs.add_argument("--input-directory", type=Path, default=None, metavar="DIR")
    dirs.add_argument("--temp-directory", type=Path, default=None, metavar="DIR")
    dirs.add_argument("--user-directory", type=Path, default=None, metavar="DIR")
    dirs.add_argument("--extra-model-paths-config", type=Path, action="append", default=[], metavar="YAML",
                      help="an extra_model_paths.yaml pointing at other model folders (repeatable)")
    dirs.add_argument("--database", type=Path, default=None, metavar="FILE",
                      help="the SQLite file of the queue and history (default <user dir>/diffloom.db)")
    dirs.add_argument("--workflows-directory", type=Path, default=None, metavar="DIR",
                      help="the ready workflows the editor offers (default: diffloom's workflows/)")
    dirs.add_argument("--front-end-root", type=Path, default=None, metavar="DIR",
                      help="serve the editor from DIR instead of web/")
    run = p.add_argument_group("execution")
    run.add_argument("--cpu", action="store_true", help="compute on the CPU even if a GPU is present")
    cache = run.add_mutually_exclusive_group()
    cache.add_argument("--cache-lru", type=_positive_int, default=None, metavar="N",
                       help="keep at most N node results (within the byte budget)")
    cache.add_argument("--cache-classic", action="store_true",
                       help="keep only results the current workflow can reuse")
    cache.add_argument("--cache-none", action="store_true", help="keep no node results between prompts")
    run.add_argument("--cache-max-bytes", type=parse_size, default=DEFAULT_CACHE_BYTES, metavar="SIZE",
                     help="byte budget of the node output cache, like 4G (default 2G); 0 for no limit")
    run.add_argument("--preview-method", choices=PREVIEW_METHODS, default="auto",
                     help="how samplers make step previews (default auto)")
    run.add_argument("--preview-size", type=_positive_int, default=512, metavar="PX",
                     help="largest side of preview images (default 512)")
    run.add_argument("--history-max", type=int, default=10_000, metavar="N",
                     help="finished prompts kept in the history (default 10000)")
    run.add_argument("--requeue-on-crash", action="store_true",
                     help="re-queue (once) a prompt that was running when the server died, instead of "
                          "marking it interrupted")
    run.add_argument("--disable-all-custom-nodes", action="store_true", help="load no plugin from custom_nodes/")
    run.add_argument("--whitelist-custom-nodes", nargs="+", default=None, metavar="NAME",
                     help="load only these plugins (even with --disable-all-custom-nodes)")
    run.add_argument("--deny-custom-nodes", nargs="+", default=[], metavar="NAME", help="never load these plugins")
    run.add_argument("--disable-metadata", action="store_true", help="write no workflow into saved images")
    scale = p.add_argument_group("scale-out (docs/scale-out.md)")
    where = scale.add_mutually_exclusive_group()
    where.add_argument("--devices", type=_devices, default=None, metavar="LIST",
                       help="one worker process per device on this machine, comma-separated: cuda:0,cuda:1 "
                            "(or cpu,cpu); prompts from the one queue run on them in parallel")
    where.add_argument("--ray-address", default=None, metavar="ADDR",
                       help="run the workers as Ray actors on the Ray cluster at ADDR ('auto' for the cluster "
                            f"this machine belongs to, 'local' to start one here; or set {RAY_ADDRESS_ENV})")
    scale.add_argument("--ray-workers", type=_positive_int, default=None, metavar="N",
                       help="Ray actors to run (default: one per GPU of the cluster, 1 without GPUs)")
    scale.add_argument("--ray-gpus-per-worker", type=_share, default=None, metavar="N",
                       help="GPUs each actor reserves (default 1 on a cluster with GPUs, else 0: CPU actors)")
    scale.add_argument("--ray-cpus-per-worker", type=_share, default=1.0, metavar="N",
                       help="CPUs each actor reserves (default 1)")
    # For tests of the server itself: load only --extra-nodes (no built-in nodes, no torch).
    run.add_argument("--extra-nodes", action="append", default=[], metavar="MODULE", help=argparse.SUPPRESS)
    run.add_argument("--skip-builtin-nodes", action="store_true", help=argparse.SUPPRESS)
    misc = p.add_argument_group("diagnostics")
    misc.add_argument("--verbose", nargs="?", const="DEBUG", default="INFO", choices=LOG_LEVELS,
                      help="log level (the bare flag means DEBUG)")
    misc.add_argument("--quick-test-for-ci", action="store_true",
                      help="load everything, then exit without serving")
    return p


def options_from_namespace(ns: argparse.Namespace, default_base: Path | None = None) -> ServerOptions:
    """Turn parsed flags into ServerOptions (the token may also come from the environment)."""
    base = (ns.base_directory or default_base or ServerOptions().base_directory).resolve()
    mode: CacheMode = "none" if ns.cache_none else "classic" if ns.cache_classic else "lru"
    return ServerOptions(
        listen=[h.strip() for h in ns.listen.split(",") if h.strip()],
        port=ns.port, base_directory=base,
        output_directory=ns.output_directory, input_directory=ns.input_directory,
        temp_directory=ns.temp_directory, user_directory=ns.user_directory,
        extra_model_paths_config=list(ns.extra_model_paths_config), database=ns.database,
        workflows_directory=ns.workflows_directory,
        cpu=ns.cpu, cache_mode=mode, cache_max_entries=ns.cache_lru,
        cache_max_bytes=ns.cache_max_bytes or None,
        max_upload_size=int(ns.max_upload_size * MB), enable_cors_header=ns.enable_cors_header,
        preview_method=ns.preview_method, preview_size=ns.preview_size,
        disable_all_custom_nodes=ns.disable_all_custom_nodes, disable_metadata=ns.disable_metadata,
        whitelist_custom_nodes=tuple(ns.whitelist_custom_nodes) if ns.whitelist_custom_nodes is not None else None,
        deny_custom_nodes=tuple(ns.deny_custom_nodes),
        front_end_root=ns.front_end_root, verbose=ns.verbose, quick_test_for_ci=ns.quick_test_for_ci,
        auth_token=ns.auth_token or os.environ.get(TOKEN_ENV) or None, history_max=ns.history_max,
        requeue_on_crash=ns.requeue_on_crash, extra_nodes=list(ns.extra_nodes),
        skip_builtin_nodes=ns.skip_builtin_nodes, devices=list(ns.devices or []),
        ray_address=None if ns.devices else (ns.ray_address or os.environ.get(RAY_ADDRESS_ENV) or None),
        ray_workers=ns.ray_workers, ray_gpus_per_worker=ns.ray_gpus_per_worker,
        ray_cpus_per_worker=ns.ray_cpus_per_worker)


def parse_server_args(argv: Sequence[str], default_base: Path | None = None) -> ServerOptions:
    """Parse `python server.py` flags (exits with a clear message on unknown or bad flags)."""
    parser = build_parser()
    ns = parser.parse_args(list(argv))
    if ns.cpu and ns.devices and any(d != "cpu" for d in ns.devices):
        parser.error(f"--cpu computes on the CPU only, but --devices lists {','.join(ns.devices)}; drop one of the two")
    return options_from_namespace(ns, default_base)
