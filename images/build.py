"""Build the training images through the Docker SDK, offline or behind a proxy if need be."""

from __future__ import annotations

import importlib.metadata
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jobs.snapshot import git_revision

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = Path(__file__).with_name("Dockerfile")
DEFAULT_BASE = "python:3.11-slim-bookworm"
LOCAL_BASE = (
    "aml-rl/base:bookworm"  # what `invoke build-base` makes when DEFAULT_BASE can't be pulled
)
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SLIM_PATHS = (
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/locale/*",
    "usr/share/info/*",
    "var/cache/apt/*",
    "var/lib/apt/lists/*",
)
CODE = ("sims", "jobs")  # packages copied into the image's last layer, with sims/external.yaml's
# Versions the image pins to the host's, so that host and cluster run the same code.
PINNED = ("ray", "gymnasium", "numpy", "scipy", "pydantic", "pyyaml", "pandas", "pyarrow", "rich")


class ImageError(RuntimeError):
    """A build problem the user can act on; the message says what and how."""


class BuildFailed(ImageError):
    def __init__(self, step: str, output: str) -> None:
        self.step, self.output = step, output
        super().__init__(f"docker build failed at {step}:\n{output}")


def docker_client(timeout: int = 600):  # -> docker.DockerClient
    """A client for a Docker engine that answers, or one message saying how to start one."""
    import docker

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:  # docker raises several types for "no engine here"
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise ImageError(
            f"no Docker engine answers at {where} ({type(exc).__name__}); start one: "
            "`sudo dockerd &` (Debian: `apt-get install docker.io`) or Docker Desktop, "
            "or point DOCKER_HOST at an engine"
        ) from None
    return client


@dataclass
class BuildOptions:
    gpu: bool = False
    tag: str = ""
    base_image: str = DEFAULT_BASE
    wheelhouse: Path | None = None
    ca_cert: Path | None = None
    overlay: Mapping[str, bytes] = field(default_factory=dict)
    """Extra or replaced files in the code layer, by path under the repo (for tests)."""
    nocache: bool = False
    """Rebuild every layer (for measuring a cold build)."""
    revision: str | None = None
    """The OCI revision label; git's HEAD by default."""
    root: Path = ROOT
    """The project whose sims/, jobs/ and declared external code go into the image."""

    @property
    def flavour(self) -> str:
        return "cuda" if self.gpu else "cpu"

    def image_tag(self) -> str:
        return self.tag or f"aml-rl:{self.flavour}"


def host_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in PINNED}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _declared(root: Path):  # -> sims.external.External
    from sims import external
    from sims.contract import SimError

    try:
        return external.load(root)
    except SimError as exc:
        raise ImageError(str(exc)) from None


def _code_files(root: Path) -> Iterable[Path]:
    """sims/, jobs/ and what sims/external.yaml declares, relative to ``root``."""
    from sims import external
    from sims.contract import SimError

    for package in CODE:
        for path in sorted((root / package).rglob("*")):
            if (
                path.is_file()
                and "__pycache__" not in path.parts
                and not path.name.endswith(".pyc")
            ):
                yield path.relative_to(root)
    try:
        yield from external.files(root)
    except SimError as exc:
        raise ImageError(str(exc)) from None


def build_context(options: BuildOptions) -> io.BytesIO:
    """The build context as a tar: the Dockerfile, pins, requirements, build inputs, code.

    Built from a list, so nothing else in the repo (.venv, runs/) is ever sent.
    """
    root = options.root
    buffer = io.BytesIO()
    pins = "".join(
        f"{name}=={version}\n" for name, version in host_versions().items() if name != "ray"
    )
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(DOCKERFILE, arcname="Dockerfile")
        _add_bytes(tar, "constraints.txt", pins.encode())
        for package in CODE:
            tar.add(root / package / "requirements.txt", arcname=f"{package}/requirements.txt")
        _add_bytes(
            tar, "build-inputs/ca.crt", options.ca_cert.read_bytes() if options.ca_cert else b""
        )
        if options.wheelhouse is not None:
            for wheel in sorted(options.wheelhouse.glob("torch-*.whl")):
                tar.add(wheel, arcname=f"build-inputs/wheels/{wheel.name}")
        overlay = dict(options.overlay)
        for path in _code_files(root):
            relative = path.as_posix()
            if relative in overlay:
                _add_bytes(tar, f"code/{relative}", overlay.pop(relative))
            else:
                tar.add(root / path, arcname=f"code/{relative}")
        for relative, data in overlay.items():
            _add_bytes(tar, f"code/{relative}", data)
    buffer.seek(0)
    return buffer


@dataclass
class Plan:
    """What a build will use, and why (printed before building)."""

    options: BuildOptions
    notes: list[str] = field(default_factory=list)


def plan_build(client, options: BuildOptions) -> Plan:
    """Detect what this machine needs: a local base image, the proxy's CA, local wheels."""
    plan = Plan(options)
    if options.base_image == DEFAULT_BASE and not _image_exists(client, DEFAULT_BASE):
        try:
            client.images.pull(DEFAULT_BASE)
            plan.notes.append(f"pulled {DEFAULT_BASE}")
        except Exception as exc:  # no registry reachable: any error means "cannot pull"
            reason = str(exc).splitlines()[0][:120]
            if not _image_exists(client, LOCAL_BASE):
                plan.notes.append(
                    f"{DEFAULT_BASE} cannot be pulled ({reason}): "
                    f"making {LOCAL_BASE} from Debian's packages"
                )
                build_base(client)
            options.base_image = LOCAL_BASE
            plan.notes.append(f"{DEFAULT_BASE} cannot be pulled here: building on {LOCAL_BASE}")
    pip_cert = os.environ.get("PIP_CERT")
    if options.ca_cert is None and pip_cert and Path(pip_cert).is_file():
        options.ca_cert = Path(pip_cert)
        plan.notes.append(
            f"pip on this machine trusts {pip_cert} (a TLS-inspecting proxy): "
            "passing it to the build"
        )
    links = os.environ.get("PIP_FIND_LINKS")
    if (
        options.wheelhouse is None
        and not options.gpu
        and links
        and any(Path(links).glob("torch-*+cpu-*.whl"))
    ):
        options.wheelhouse = Path(links)
        plan.notes.append(f"using the CPU torch wheel in {links} (PIP_FIND_LINKS)")
    return plan


def _image_exists(client, name: str) -> bool:
    import docker

    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


@dataclass
class BuildResult:
    tag: str
    image_id: str
    size_bytes: int
    seconds: float
    log: list[str]
    notes: list[str]

    @property
    def cached_steps(self) -> int:
        return sum("Using cache" in line for line in self.log)


def build_image(
    options: BuildOptions, client=None, echo: Callable[[str], None] | None = None
) -> BuildResult:
    """Build the image; :class:`BuildFailed` carries the failing step's output."""
    client = client or docker_client()
    plan = plan_build(client, options)
    for note in plan.notes:
        (echo or print)(f"build: {note}")
    torch_args = "--find-links /build-inputs/wheels" if options.wheelhouse else ""
    if not options.gpu and not options.wheelhouse:
        torch_args = "--extra-index-url https://download.pytorch.org/whl/cpu"
    versions = host_versions()
    args = {
        "BASE_IMAGE": options.base_image,
        "TORCH_FLAVOUR": options.flavour,
        "TORCH_VERSION": importlib.metadata.version("torch").split("+")[0],
        "RAY_VERSION": versions["ray"],
        "TORCH_PIP_ARGS": torch_args,
        # a runtime the simulators need (sims/external.yaml's apt: nodejs, a JRE)
        "APT_PACKAGES": " ".join(_declared(options.root).apt),
        "VERSION": importlib.metadata.version("aml-rl"),
        # the full revision, as OCI's revision label expects
        "REVISION": options.revision or git_revision(),
    }
    return _run_build(
        client,
        build_context(options),
        options.image_tag(),
        args,
        options.nocache,
        echo,
        plan.notes,
    )


def _run_build(
    client,
    context: io.BytesIO,
    tag: str,
    args: Mapping[str, str],
    nocache: bool,
    echo: Callable[[str], None] | None,
    notes: list[str],
) -> BuildResult:
    """Send ``context`` to the engine and follow the build; :class:`BuildFailed` carries the
    failing step's output."""
    log: list[str] = []
    step, step_start = "the start", 0
    started = time.perf_counter()
    stream = client.api.build(
        fileobj=context,
        custom_context=True,
        tag=tag,
        buildargs=dict(args),
        rm=True,
        forcerm=True,  # a failed step's container too
        decode=True,
        nocache=nocache,
    )
    image_id = ""
    for chunk in stream:
        text = chunk.get("stream", "")
        for line in text.splitlines():
            log.append(line)
            if re.match(r"Step \d+/\d+ :", line):
                step, step_start = line, len(log) - 1
                if echo:
                    echo(line)
        if "error" in chunk:
            output = "\n".join([*log[step_start:], chunk["error"]])
            raise BuildFailed(step, output[-6000:])
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
    seconds = time.perf_counter() - started
    image = client.images.get(tag)
    return BuildResult(tag, image_id or image.id, image.attrs["Size"], seconds, log, notes)


SERVE_DOCKERFILE = Path(__file__).with_name("Dockerfile.serve")
SERVE_REQUIREMENTS = ("numpy", "onnxruntime", "fastapi", "uvicorn", "pydantic")


def build_serving_image(
    bundle: Path, tag: str = "", client=None, echo: Callable[[str], None] | None = None
) -> BuildResult:
    """The serving image of ``bundle``: the Ray-free runtime and the bundle, on the same base
    as the training image (with the same base and proxy detection); tagged
    ``aml-rl-policy:<sim>-<bundle digest>`` by default."""
    from policy_runtime import load

    policy = load(bundle)  # refuses a bundle whose graph does not match its metadata
    client = client or docker_client()  # after: a folder that is no bundle is named first
    meta = policy.metadata
    digest = meta["graph_sha256"]
    tag = tag or f"aml-rl-policy:{tag_part(meta['sim'])}-{digest[:12]}"
    options = BuildOptions(tag=tag)
    plan = plan_build(client, options)
    for note in plan.notes:
        (echo or print)(f"build: {note}")
    versions = {name: importlib.metadata.version(name) for name in SERVE_REQUIREMENTS}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(SERVE_DOCKERFILE, arcname="Dockerfile")
        _add_bytes(tar, "build-inputs/requirements.txt", "\n".join(versions).encode())
        pins = "".join(f"{name}=={version}\n" for name, version in versions.items())
        _add_bytes(tar, "build-inputs/constraints.txt", pins.encode())
        _add_bytes(
            tar, "build-inputs/ca.crt", options.ca_cert.read_bytes() if options.ca_cert else b""
        )
        for path in sorted((ROOT / "policy_runtime").glob("*.py")):
            tar.add(path, arcname=f"policy_runtime/{path.name}")
        for path in sorted(Path(bundle).iterdir()):
            tar.add(path, arcname=f"bundle/{path.name}")
    buffer.seek(0)
    args = {
        "BASE_IMAGE": options.base_image,
        "BUNDLE_SHA256": digest,
        "SIM": meta["sim"],
        "REVISION": str(meta.get("git_revision") or "unknown"),
    }
    return _run_build(client, buffer, tag, args, False, echo, plan.notes)


def tag_part(text: str) -> str:
    """A string made fit for a Docker tag (letters, digits, '.', '_', '-')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.").lower() or "sim"


def build_base(client=None, tag: str = LOCAL_BASE, suite: str = "bookworm") -> str:
    """A Debian base image from Debian's packages (debootstrap), for when none can be pulled."""
    client = client or docker_client()
    if shutil.which("debootstrap") is None:
        raise ImageError(
            "debootstrap is not installed; install it with `apt-get install debootstrap` (as root)"
        )
    with tempfile.TemporaryDirectory(prefix="aml-rl-base-") as folder:
        command = [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            suite,
            folder,
            "http://deb.debian.org/debian",
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise ImageError(
                f"debootstrap failed ({done.returncode}):\n"
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        # What slim images leave out too (~150 MB): docs, locales, apt's caches and lists.
        for pattern in SLIM_PATHS:
            for junk in Path(folder).glob(pattern):
                if junk.is_dir() and not junk.is_symlink():
                    shutil.rmtree(junk)
                else:
                    junk.unlink()
        tar = subprocess.Popen(["tar", "-C", folder, "-c", "."], stdout=subprocess.PIPE)
        repository, _, version = tag.partition(":")
        client.api.import_image_from_stream(
            tar.stdout, repository=repository, tag=version or "latest"
        )
        if tar.wait() != 0:
            raise ImageError(f"tar of the debootstrap tree in {folder} failed")
    return client.images.get(tag).id
