"""The front door: `invoke --list` shows every task; each calls one function in the package that
owns the work (sims/, jobs/, client/, images/, benchmarks/)."""

from __future__ import annotations

import functools
import inspect
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import invoke
from invoke import Context, Exit
from invoke.exceptions import ParseError
from invoke.parser import ParserContext
from invoke.parser.argument import Argument

ROOT = Path(__file__).resolve().parent
task = functools.partial(invoke.task, auto_shortflags=False)
"""Every task's flags are long only: invoke's one-letter guesses took ``-h`` (help) for
``--show-target`` and made ``--resource-group`` ``--``; the README and the workflows use
long flags."""
HELP_FLAGS = ("-h", "--help")

_set_value = Argument.set_value


def _set_value_or_say_so(self: Argument, value: object, cast: bool = True) -> None:
    """invoke 3.0 turns a bad value for a typed flag (`--episodes many`) into a ValueError
    traceback; this makes it invoke's own parse error, which it prints as one line."""
    try:
        _set_value(self, value, cast=cast)
    except ValueError:
        kind = getattr(self.kind, "__name__", str(self.kind))
        flag = max(self.names, key=len).replace("_", "-")
        raise ParseError(f"--{flag} {value!r}: not a valid {kind}; give a number") from None


Argument.set_value = _set_value_or_say_so

_help_for = ParserContext.help_for


def _help_for_every_kind(self: ParserContext, flag: str) -> tuple[str, str]:
    """invoke 3.0 names the value of str and int flags only (``--runs-dir=STRING``), so a
    number of seconds or a repeatable ``--set`` read as on/off switches: name those too."""
    names, text = _help_for(self, flag)
    value = {float: "FLOAT", list: "VALUE"}.get(self.flags[flag].kind)
    if value and "=" not in names:
        names = ", ".join(f"{name}={value}" for name in names.split(", "))
        if value == "VALUE":
            text = f"{text} (repeatable)" if "repeatable" not in text else text
    return names, text


ParserContext.help_for = _help_for_every_kind


def _help_instead(c: Context, value: str, task_name: str) -> None:
    """`invoke TASK --help` on a task with a positional argument: invoke 3.0 takes the flag as
    the argument's value (pyinvoke/invoke#982); print the task's help as `invoke --help` does."""
    if value in HELP_FLAGS:
        c.run(shlex.join([sys.executable, "-m", "invoke", "--help", task_name]))
        raise Exit(code=0)


@task(
    help={
        "sim": "simulator: cstr, simple_adder, a Gymnasium id, module:EnvId or module:ClassName",
        "lessons": "a lessons YAML to check instead of the simulator's own",
        "episodes": "random-policy episodes to run (default 30)",
    }
)
def check_sim(c: Context, sim: str = "cstr", lessons: str = "", episodes: int = 30) -> None:
    """Check a simulator against the contract before training on it."""
    from sims.check import check_sim as run_checks
    from sims.check import render

    if episodes < 1:
        raise Exit(
            f"check-sim: --episodes {episodes}: give 1 or more random-policy episodes", code=2
        )
    report = run_checks(sim, lessons=Path(lessons) if lessons else None, episodes=episodes)
    render(report)
    if not report.ok:
        reasons = "\n".join(f"- {f.check}: {f.detail}" for f in report.failures())
        raise Exit(f"check-sim: {sim} does not conform:\n{reasons}", code=1)


@task(help={"name": "module name for the new simulator, e.g. my_tank"})
def new_sim(c: Context, name: str) -> None:
    """Scaffold a simulator: module, lessons, scenarios and a test that pass check-sim."""
    _help_instead(c, name, "new-sim")
    from sims.contract import SimError
    from sims.scaffold import new_sim as scaffold

    try:
        written = scaffold(name, ROOT)
    except SimError as exc:
        raise Exit(f"new-sim: {exc}") from None
    for path in written:
        print(f"wrote {path.relative_to(ROOT)}")
    print(f"next: edit sims/{name}.py, then `invoke check-sim --sim {name}`")


@task(help={"fix": "apply ruff's fixes and formatting instead of only checking"})
def lint(c: Context, fix: bool = False) -> None:
    """Lint and format-check the code with ruff (not the packages sims/external.yaml
    declares: a vendor's code is theirs)."""
    from sims.external import load as declared

    root = Path(c.cwd)  # the project being linted: its own declaration
    vendor = "".join(f" --extend-exclude {shlex.quote(path)}" for path in declared(root).include)
    if fix:
        c.run(f"ruff check --fix .{vendor}")
        c.run(f"ruff format .{vendor}")
    else:
        c.run(f"ruff check .{vendor}")
        c.run(f"ruff format --check .{vendor}")


@task(
    help={
        "k": "only tests matching this pytest -k expression",
        "slow": "also run tests marked slow",
        "args": "extra arguments for pytest",
    }
)
def test(c: Context, k: str = "", slow: bool = False, args: str = "") -> None:
    """Lint, then run the whole test suite (Docker tests too when an engine answers)."""
    lint(c)
    selection = [] if slow else ["-m", "not slow"]
    if k:
        selection += ["-k", k]
    # the slowest tests named at the end: what to look at when the suite outgrows CI's time
    c.run(f"{shlex.join(['pytest', '--durations=20', *selection])} {args}")
    bench(c, quick=True)  # the harness must not rot; quick results go to benchmarks/quick/


@task(
    help={
        "config": "experiment YAML (default jobs/configs/cstr_ppo.yaml)",
        "set": "override a config key, KEY=VALUE (repeatable), e.g. --set training.lr=1e-4",
        "smoke": "a tiny budget (seconds) through the same code path",
        "resume": "continue this run directory from its newest checkpoint",
        "runs_dir": "where run directories go (default runs/)",
    },
    iterable=["set"],
)
def train(
    c: Context,
    config: str = "",
    set: list[str] | None = None,
    smoke: bool = False,
    resume: str = "",
    runs_dir: str = "runs",
) -> None:
    """Train an RLlib agent (default: PPO on the embedded CSTR), then assess it."""
    from jobs.train import USER_ERRORS
    from jobs.train import train as run_training

    try:
        run_training(
            Path(config) if config else None,
            sets=set or [],
            smoke=smoke,
            resume=Path(resume) if resume else None,
            runs_root=Path(runs_dir),
        )
    except USER_ERRORS as exc:
        raise Exit(f"train: {exc}", code=2) from None
    except KeyboardInterrupt:
        raise Exit(
            "train: interrupted; a checkpoint was saved, continue with --resume RUN_DIR", code=130
        ) from None


@task(
    help={
        "space": "search space YAML: config keys to distributions (see the README's Tune section)",
        "config": "experiment YAML the trials vary (default jobs/configs/cstr_ppo.yaml)",
        "samples": "trials to sample (default 4; a grid multiplies them)",
        "scheduler": "asha (stops weak trials early) or fifo (runs every trial to its budget)",
        "metric": "training metric the scheduler compares (default the episode return)",
        "kpi": "assessment KPI that ranks the trials that do not beat the baseline (default: "
        "the simulator's primary KPI); those that beat it rank by env steps to the verdict",
        "max_concurrent": "trials at a time (default: as many as the CPUs hold)",
        "time_budget": "seconds for the whole study; running trials then stop early",
        "resume": "continue this study folder after a kill",
        "runs_dir": "where study folders go (default runs/)",
        "confirm_seeds": "e.g. 1,2,3: train the best config and the config as given on these "
        "seeds too, and say whether the best's lead holds (one seed's lead is often luck)",
    }
)
def tune(
    c: Context,
    space: str = "",
    config: str = "",
    samples: int = 4,
    scheduler: str = "asha",
    metric: str = "",
    kpi: str = "",
    max_concurrent: int = 0,
    time_budget: float = 0.0,
    resume: str = "",
    runs_dir: str = "runs",
    confirm_seeds: str = "",
) -> None:
    """Search hyperparameters with Ray Tune: every trial a run, the best config written back."""
    from jobs.train import USER_ERRORS
    from jobs.tune.run import run_study
    from jobs.tune.study import DEFAULT_METRIC, parse_seeds

    try:
        run_study(
            space=Path(space) if space else None,
            config=Path(config) if config else None,
            samples=samples,
            scheduler=scheduler,
            metric=metric or DEFAULT_METRIC,
            kpi=kpi,
            max_concurrent=max_concurrent,
            time_budget_s=time_budget or None,
            runs_root=Path(runs_dir),
            resume=Path(resume) if resume else None,
            confirm_seeds=parse_seeds(confirm_seeds),
        )
    except USER_ERRORS as exc:
        raise Exit(f"tune: {exc}", code=2) from None


@task(
    help={
        "checkpoint": "a checkpoint folder, or a run directory (its newest checkpoint)",
        "scenarios": "scenario set YAML (default: the simulator's own)",
        "out": "where kpis.csv/kpis.json go (default: <run>/assessments/<checkpoint>-<time>)",
    }
)
def assess(c: Context, checkpoint: str, scenarios: str = "", out: str = "") -> None:
    """Run a trained policy and the baseline deterministically on the same scenarios; print KPIs."""
    _help_instead(c, checkpoint, "assess")
    from jobs.assess import assess as run_assessment
    from jobs.assess import default_out, resolve_checkpoint
    from jobs.console import print_kpis
    from jobs.train import USER_ERRORS

    try:
        ckpt = resolve_checkpoint(Path(checkpoint))
        target = Path(out) if out else default_out(ckpt)
        result = run_assessment(
            ckpt,
            scenarios=Path(scenarios) if scenarios else None,
            out=target,
            trajectories=target / "trajectories",
        )
    except USER_ERRORS as exc:
        raise Exit(f"assess: {exc}", code=2) from None
    except OSError as exc:
        raise _os_error("assess", exc) from None
    print_kpis(result.table, title=f"assessment of {ckpt}", units=result.units)
    print(f"wrote {target}/kpis.csv, kpis.json and trajectories/")


@task(
    help={
        "run": "run directory",
        "csv": "write CSV (required: the only export format; the Parquet files are the logs)",
        "out": "output file (default <run>/trajectories.csv)",
    }
)
def export_trajectories(c: Context, run: str, csv: bool = False, out: str = "") -> None:
    """Export a run's trajectory logs (Parquet) as one CSV file."""
    _help_instead(c, run, "export-trajectories")
    from jobs.rundir import RunError
    from jobs.trajectories import export_csv

    if not csv:
        raise Exit(
            "export-trajectories: pass --csv (the only export format); the Parquet files "
            f"themselves are under {run}/trajectories/"
        )
    try:
        path = export_csv(Path(run), Path(out) if out else None)
    except RunError as exc:
        raise Exit(f"export-trajectories: {exc}", code=2) from None
    except OSError as exc:
        raise _os_error("export-trajectories", exc) from None
    print(f"wrote {path}")


@task(
    help={
        "run": "run directory (local, in a container's mounted folder, or downloaded)",
        "out": "where to write the page (default <run>/view.html)",
        "episodes": "training episodes per lesson on the page (default 12)",
    }
)
def view(c: Context, run: str, out: str = "", episodes: int = 12) -> None:
    """Write one self-contained HTML page of a run: curves, agent vs baseline, episode player."""
    _help_instead(c, run, "view")
    from jobs.rundir import RunError
    from viewer.page import build_page

    if episodes < 1:
        raise Exit(f"view: --episodes {episodes}: give 1 or more episodes per lesson", code=2)
    try:
        page = build_page(Path(run), Path(out) if out else None, episodes=episodes)
    except RunError as exc:
        raise Exit(f"view: {exc}", code=2) from None
    except OSError as exc:
        raise _os_error("view", exc) from None
    print(f"wrote {page} ({page.stat().st_size / 1e6:.1f} MB); open it in a browser")


@task(
    iterable=["run"],
    help={
        "run": "a run directory, or a study folder for its trials, ranked; repeat it",
        "out": "where to write the page (default compare.html)",
    },
)
def compare(c: Context, run: list[str], out: str = "compare.html") -> None:
    """Write one HTML page of runs side by side: verdicts, training curves, KPIs per scenario."""
    from jobs.rundir import RunError
    from viewer.compare import build_comparison

    try:
        page = build_comparison([Path(r) for r in run], Path(out))
    except RunError as exc:
        raise Exit(f"compare: {exc}", code=2) from None
    except OSError as exc:
        raise _os_error("compare", exc) from None
    print(f"wrote {page} ({page.stat().st_size / 1e6:.1f} MB); open it in a browser")


def _os_error(name: str, exc: OSError) -> Exit:
    """A file the task could not read or write (an unwritable --out): one line naming it."""
    return Exit(
        f"{name}: {exc.filename or 'a file'}: {exc.strerror or exc}; check the path and its "
        "permissions (--out: a folder you can write)",
        code=2,
    )


ALLOW_LOSING = "take a policy whose verdict says it does not beat its baseline (default: refuse)"


@task(
    help={
        "run": "a run directory (its newest checkpoint) or a checkpoint folder",
        "out": "the bundle folder (default <run>/bundle)",
        "allow_losing": ALLOW_LOSING,
    }
)
def export(c: Context, run: str, out: str = "", allow_losing: bool = False) -> None:
    """Export a trained policy as a Ray-free bundle: an ONNX graph and its metadata."""
    _help_instead(c, run, "export")
    from client.export import ExportError, export_bundle
    from jobs.train import USER_ERRORS
    from jobs.verdict import LosingPolicy

    try:
        bundle = export_bundle(Path(run), Path(out) if out else None, allow_losing=allow_losing)
    except (ExportError, LosingPolicy, *USER_ERRORS) as exc:
        raise Exit(f"export: {exc}", code=2) from None
    print(f"wrote {bundle}; serve it with `invoke serve {bundle}`")


@task(
    help={
        "bundle": "a bundle folder from `invoke export`",
        "port": "port to listen on (default 8000)",
        "host": "address to listen on (default 127.0.0.1)",
    }
)
def serve(c: Context, bundle: str, port: int = 8000, host: str = "127.0.0.1") -> None:
    """Serve a policy bundle over HTTP: POST /v1/predict, GET /v1/info, GET /healthz."""
    _help_instead(c, bundle, "serve")
    from policy_runtime import BundleError
    from policy_runtime.serve import serve as run_server

    try:
        run_server(bundle, host=host, port=port)
    except BundleError as exc:
        raise Exit(f"serve: {exc}", code=2) from None


@task(
    help={
        "gpu": "build the GPU image (torch's CUDA wheels from PyPI) instead of the CPU one",
        "tag": "image tag (default aml-rl:cpu or aml-rl:cuda)",
        "push": "after building, push to this Azure Container Registry (e.g. myacr.azurecr.io)",
        "base_image": "base image (default python:3.11-slim-bookworm; see build-base)",
        "wheelhouse": "a folder of local wheels for pip (e.g. the CPU torch wheel)",
        "ca_cert": "an extra CA bundle for pip inside the build (TLS-inspecting proxies)",
        "serve": "build the serving image of this policy bundle (from `invoke export`) instead",
    }
)
def build(
    c: Context,
    gpu: bool = False,
    tag: str = "",
    push: str = "",
    base_image: str = "",
    wheelhouse: str = "",
    ca_cert: str = "",
    serve: str = "",
) -> None:
    """Build the CPU (or GPU) training image, or a bundle's serving image; print its size."""
    from images.build import (
        DEFAULT_BASE,
        BuildOptions,
        ImageError,
        build_image,
        build_serving_image,
    )

    if serve:
        from policy_runtime import BundleError

        try:
            result = build_serving_image(Path(serve), tag=tag, echo=print)
        except (ImageError, BundleError) as exc:
            raise Exit(f"build --serve: {exc}", code=1) from None
        print(f"built {result.tag}: {result.size_bytes / 1e6:.0f} MB in {result.seconds:.1f} s")
        return

    options = BuildOptions(
        gpu=gpu,
        tag=tag,
        base_image=base_image or DEFAULT_BASE,
        wheelhouse=Path(wheelhouse) if wheelhouse else None,
        ca_cert=Path(ca_cert) if ca_cert else None,
    )
    try:
        result = build_image(options, echo=print)
    except ImageError as exc:
        raise Exit(f"build: {exc}", code=1) from None
    print(
        f"built {result.tag} ({result.image_id[:19]}): {result.size_bytes / 1e9:.2f} GB "
        f"in {result.seconds:.1f} s "
        f"({result.cached_steps} cached steps)"
    )
    if push:
        from images.push import push_image

        try:
            from client.credentials import azure_credential

            pushed = push_image(result.tag, push, credential=azure_credential(), echo=print)
        except ImageError as exc:
            raise Exit(f"build --push: {exc}", code=1) from None
        print(f"pushed {pushed}")


@task(help={"tag": "tag for the base image (default aml-rl/base:bookworm)"})
def build_base(c: Context, tag: str = "") -> None:
    """Make a Debian bookworm base image from Debian's packages, for machines with no registry."""
    from images.build import LOCAL_BASE, ImageError
    from images.build import build_base as make_base

    try:
        image_id = make_base(tag=tag or LOCAL_BASE)
    except ImageError as exc:
        raise Exit(f"build-base: {exc}", code=1) from None
    print(
        f"built {tag or LOCAL_BASE} ({image_id[:19]}); "
        "`invoke build` uses it when the public base can't be pulled"
    )


TARGET_HELP = {
    "outputs": "a saved `pulumi stack output --json` file (default: ask the Pulumi CLI)",
    "subscription_id": "override the subscription (else $AZURE_SUBSCRIPTION_ID or infra outputs)",
    "resource_group": "override the resource group (else $AZURE_RESOURCE_GROUP or infra outputs)",
    "workspace_name": "override the workspace (else $AZUREML_WORKSPACE_NAME or infra outputs)",
}


def azure_task(*, help: dict[str, str], **options: Any) -> Callable[[Callable], Any]:
    """A task that takes the Azure target flags, declared here once (``TARGET_HELP``): its
    body takes them as ``azure``, the keyword arguments of :func:`_target` and
    :func:`_client`."""

    def declare(body: Callable) -> Any:
        signature = inspect.signature(body)
        own = [p for p in signature.parameters.values() if p.name != "azure"]
        flags = [
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default="")
            for name in TARGET_HELP
        ]

        @functools.wraps(body)
        def run(c: Context, *args: Any, **kwargs: Any) -> Any:
            azure = {name: kwargs.pop(name, "") for name in TARGET_HELP}
            return body(c, *args, azure=azure, **kwargs)

        run.__signature__ = signature.replace(parameters=own + flags)  # what invoke reads
        return task(help={**help, **TARGET_HELP}, **options)(run)

    return declare


def _target(
    outputs: str, subscription_id: str, resource_group: str, workspace_name: str, **more: str
):
    from client.workspace import resolve_target

    flags = {
        "subscription_id": subscription_id,
        "resource_group": resource_group,
        "workspace_name": workspace_name,
        **more,
    }
    return resolve_target(Path(outputs) if outputs else None, flags=flags)


@azure_task(
    help={
        "config": "experiment YAML (default jobs/configs/cstr_ppo.yaml)",
        "set": "override a config key, KEY=VALUE (repeatable)",
        "nodes": "nodes (>1 starts a Ray cluster through Azure ML's Ray distribution; an auto "
        "layout uses every node's CPUs)",
        "gpu": "run on the GPU cluster with the GPU image (an auto layout learns on the GPUs)",
        "wait": "stream the job's logs until it ends",
        "dry_run": "write the job YAML (for `az ml job create -f`) and touch no network",
        "out": "where --dry-run writes the YAML (default .aml/<run-id>/job.yaml)",
        "show_target": "print the workspace, clusters and datastore resolved, and from where",
        "image": "training image (default <registry>/aml-rl:cpu or :cuda)",
        "record": "write the submitted job's name, status and run id to this JSON file",
        "check": "first verify the workspace, cluster size, datastore write access and image",
        "tune": "run a study over this search space instead (see `invoke tune`)",
        "samples": "with --tune: trials to sample (default 4)",
        "confirm_seeds": "with --tune, e.g. 1,2,3: confirm the best trial's lead on these seeds",
    },
    iterable=["set"],
)
def submit(
    c: Context,
    config: str = "",
    set: list[str] | None = None,
    nodes: int = 1,
    gpu: bool = False,
    wait: bool = False,
    dry_run: bool = False,
    out: str = "",
    show_target: bool = False,
    image: str = "",
    record: str = "",
    check: bool = False,
    tune: str = "",
    samples: int = 4,
    confirm_seeds: str = "",
    azure: dict[str, str] | None = None,
) -> None:
    """Run the training job (or with --tune, a study) on Azure ML, as `invoke train` does."""
    from client.submit import submit_experiment
    from client.workspace import SubmitError
    from jobs.tune.space import SpaceError
    from jobs.tune.study import parse_seeds

    try:
        target = _target(**azure)
        if show_target:
            print(target.describe())
            return
        submit_experiment(
            target,
            config=Path(config) if config else None,
            sets=set or [],
            nodes=nodes,
            gpu=gpu,
            wait=wait,
            dry_run=dry_run,
            out=Path(out) if out else None,
            image=image or None,
            record=Path(record) if record else None,
            check=check,
            tune=Path(tune) if tune else None,
            samples=samples,
            confirm_seeds=parse_seeds(confirm_seeds),
        )
    except (SubmitError, SpaceError) as exc:
        raise Exit(f"submit: {exc}", code=2) from None


def _client(**azure: str):
    from client.workspace import SubmitError, ml_client

    try:
        return ml_client(_target(**azure))
    except SubmitError as exc:
        raise Exit(f"{exc}", code=2) from None


@azure_task(help={"job": "Azure ML job name"})
def logs(
    c: Context,
    job: str,
    azure: dict[str, str] | None = None,
) -> None:
    """Stream an Azure ML job's logs until it ends."""
    _help_instead(c, job, "logs")
    _client(**azure).jobs.stream(job)


@azure_task(help={"job": "Azure ML job name"})
def status(
    c: Context,
    job: str,
    azure: dict[str, str] | None = None,
) -> None:
    """Print an Azure ML job's status."""
    _help_instead(c, job, "status")
    found = _client(**azure).jobs.get(job)
    print(f"{found.name}: {found.status} ({found.display_name}); {found.studio_url}")


@azure_task(
    help={
        "job": "Azure ML job name",
        "to": "download folder (default downloads/<job>)",
    }
)
def download(
    c: Context,
    job: str,
    to: str = "",
    azure: dict[str, str] | None = None,
) -> None:
    """Download a job's run directory, so `invoke assess` works on it as on a local run."""
    _help_instead(c, job, "download")
    from client.results import download_run
    from client.workspace import SubmitError

    try:
        run = download_run(
            _client(**azure),
            job,
            Path(to or f"downloads/{job}"),
        )
    except SubmitError as exc:
        raise Exit(f"download: {exc}", code=2) from None
    print(f"downloaded {run}; assess it with `invoke assess --checkpoint {run}`")


@azure_task(help={"job": "Azure ML job name", "allow_losing": ALLOW_LOSING})
def register_model(
    c: Context,
    job: str,
    allow_losing: bool = False,
    azure: dict[str, str] | None = None,
) -> None:
    """Register a finished job's final checkpoint as an Azure ML model, with its provenance."""
    _help_instead(c, job, "register-model")
    from client.results import register_model as register
    from client.workspace import SubmitError

    try:
        client = _client(**azure)
        model = register(client, job, allow_losing=allow_losing)
    except SubmitError as exc:
        raise Exit(f"register-model: {exc}", code=2) from None
    print(f"registered {model.name}:{model.version} from {job}")


@azure_task(
    help={
        "source": "a run, checkpoint or bundle folder, an Azure ML job, or a model NAME:VERSION",
        "endpoint": "endpoint name (default <sim>-<8 hex of the workspace>; unique per region)",
        "instance_type": "VM size of the deployment (default Standard_DS3_v2)",
        "instances": "instances of the deployment (default 1)",
        "keep_old": "keep the endpoint's previous deployments (with no traffic); default: delete",
        "dry_run": "write endpoint.yaml and deployment.yaml (for `az ml`) and touch no network",
        "out": "where --dry-run writes them (default .aml/deploy/<endpoint>)",
        "allow_losing": ALLOW_LOSING,
    }
)
def deploy(
    c: Context,
    source: str,
    endpoint: str = "",
    instance_type: str = "",
    instances: int = 1,
    keep_old: bool = False,
    dry_run: bool = False,
    out: str = "",
    allow_losing: bool = False,
    azure: dict[str, str] | None = None,
) -> None:
    """Serve a policy on an Azure ML managed online endpoint (Azure AD auth, no keys)."""
    _help_instead(c, source, "deploy")
    from client.deploy import DEFAULT_INSTANCE_TYPE, DeployError, deploy_policy
    from client.workspace import SubmitError
    from policy_runtime import BundleError

    try:
        deploy_policy(
            _target(**azure),
            source,
            endpoint=endpoint,
            instance_type=instance_type or DEFAULT_INSTANCE_TYPE,
            instances=instances,
            keep_old=keep_old,
            dry_run=dry_run,
            out=Path(out) if out else None,
            allow_losing=allow_losing,
        )
    except (DeployError, SubmitError, BundleError) as exc:
        raise Exit(f"deploy: {exc}", code=2) from None


@azure_task(
    help={
        "endpoint": "endpoint name (from `invoke deploy`)",
        "states": 'JSON file: {"Ca": 8.5, ...} or a list of such (or the API\'s own body)',
        "deployment": "ask one deployment (default: the endpoint's traffic rules)",
    }
)
def predict(
    c: Context,
    endpoint: str,
    states: str = "",
    deployment: str = "",
    azure: dict[str, str] | None = None,
) -> None:
    """Ask a deployed policy for its action on states from a file; print its answer."""
    _help_instead(c, endpoint, "predict")
    if not states:
        raise Exit("predict: give the states with --states FILE (a JSON file)", code=2)
    import json

    from client.deploy import DeployError, read_request
    from client.deploy import predict as ask

    try:
        body = read_request(Path(states))  # a file the user got wrong, before any login
        client = _client(**azure)
        answer = ask(client, endpoint, body, deployment)
    except DeployError as exc:
        raise Exit(f"predict: {exc}", code=2) from None
    print(json.dumps(answer, indent=2))


@task(
    help={
        "quick": "tiny budgets, to check the harness (results go to benchmarks/quick/)",
        "only": "run one benchmark: zoo, sim_step, training_throughput, layout, "
        "trajectory_logging_overhead, control_quality, image, scale_out, startup, viewer, "
        "serving, tune, process_simulator, profile, sample_ahead, warm_start",
    }
)
def bench(c: Context, quick: bool = False, only: str = "") -> None:
    """Measure sim speed, throughput, logging overhead, control, image, start-up, the viewer."""
    from benchmarks.bench import render_markdown, run

    try:
        report = run(quick=quick, only=only or None)
    except ValueError as exc:
        raise Exit(f"bench: {exc}", code=2) from None
    print(render_markdown(report))


@task(
    help={
        "run": "run directory (local, or downloaded from Azure ML)",
        "github_output": "append beats_baseline=true|false to this file ($GITHUB_OUTPUT)",
    }
)
def report(c: Context, run: str, github_output: str = "") -> None:
    """Print a run's summary and KPI table as Markdown (for CI step summaries)."""
    _help_instead(c, run, "report")
    from client.report import beats_baseline, markdown
    from jobs.rundir import RunError

    try:
        text, beats = markdown(Path(run)), beats_baseline(Path(run))
    except RunError as exc:
        raise Exit(f"report: {exc}", code=2) from None
    print(text)
    if github_output:
        with open(github_output, "a") as fh:
            fh.write(f"beats_baseline={'true' if beats else 'false'}\n")
