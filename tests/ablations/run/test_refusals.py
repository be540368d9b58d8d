"""Every refusal the suite knows leaves nothing. Each case runs ``python -m ablations.run`` (its ``main``, in this
process) in a folder of its own holding only its study file and what the case sets up first (another driver's hold,
an earlier invocation, a teacher file), with that folder as the working directory (so a relative default such as
``ray_results`` would land in it too), and must exit 2 with one line holding the expected words, leave the folder
exactly as it found it, and leave no Ray process: none of these refusals may start Ray (the local node's resources
are counted before it starts, with Ray's own count). A refusal added to a table of ``test_faults.py`` is checked here
too; refusals that need a cluster of several nodes are ``test_cluster.py``'s."""

import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from ablations.run.cleanup import parents
from ablations.run.cli import main
from ablations.run.cluster import local_node
from ablations.run.hold import StudyHold
from tests.ablations.helpers import plain_http_server
from tests.ablations.run.test_faults import ADDRESSES, FILES, SETTINGS, TRACKING, _good

STUDY = "bad.yaml"


@dataclass
class Refusal:
    """One refusal: the study file (given its folder), the words its one line holds, the CLI's arguments after the
    file (given the folder and what ``setup`` yielded), what must exist before it runs (a context manager given the
    folder, yielding a server's address or None) and the environment it runs in."""

    study: Callable[[Path], str | bytes]
    expected: str
    args: Callable[[Path, str | None], list[str]] = lambda d, x: []
    setup: Callable[[Path], AbstractContextManager] = lambda d: nullcontext()
    env: dict[str, str] = field(default_factory=dict)


@contextmanager
def _held(folder: Path) -> Iterator[None]:
    """Another driver's hold of study ``bad`` (a real lock on its lock file, taken in this process: a lock of
    another open file, as a second process's would be)."""
    hold = StudyHold(folder / "ray" / "bad" / "driver.lock", "bad").take()
    try:
        yield
    finally:
        hold.release()


@contextmanager
def _earlier_invocation(folder: Path) -> Iterator[None]:
    """An invocation of study ``bad`` that ran another study file (its state names it)."""
    state = folder / "ray" / "bad" / "20260101-000000" / "ablation.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"study": {"name": "bad", "variants": {"other": {}}}}')
    yield


@contextmanager
def _teacher(folder: Path) -> Iterator[None]:
    """A DTM teacher file of a 3-block encoder (the study's has 2)."""
    import torch

    from mto.config import ModelConfig
    from mto.methods.backbone import create_vit

    vit = create_vit(ModelConfig(embed_dim=32, depth=3, num_heads=2), img_size=16, in_chans=1)
    torch.save(vit.state_dict(), folder / "teacher.pt")
    yield


@contextmanager
def _silent_server(folder: Path) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts connections (the kernel's backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"127.0.0.1:{listener.getsockname()[1]}"


S3_UNREACHABLE = {  # pyarrow's S3 file system pointed at a local port nothing listens on
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _resources(node: dict[str, float]) -> dict[str, Refusal]:
    """Resources the local node lacks, refused before Ray starts."""
    cpus, gpus = int(node["CPU"]), node["GPU"]
    out = {
        "one CPU more than the machine has": Refusal(
            lambda d: _good(d) + f"resources: {{cpu: {cpus + 1}}}\n",
            f"resources.cpu={cpus + 1} is invalid: at most {cpus}: no node of the Ray cluster has more CPUs",
        ),
        "4096 CPUs": Refusal(lambda d: _good(d) + "resources: {cpu: 4096}\n", "resources.cpu=4096 is invalid"),
        "one GPU more than the machine has": Refusal(
            lambda d: _good(d) + f"resources: {{gpu: {gpus + 1:g}}}\n", f"resources.gpu={gpus + 1:g} is invalid"
        ),
    }
    if gpus < 4:
        out["4 GPUs"] = Refusal(lambda d: _good(d) + "resources: {gpu: 4}\n", "resources.gpu=4 is invalid")
    if gpus == 0:
        out["half a GPU on a machine without one"] = Refusal(
            lambda d: _good(d) + "resources: {gpu: 0.5}\n",
            "resources.gpu=0.5 is invalid: 0: the Ray cluster has no GPU",
        )
    return out


def refusals() -> dict[str, Refusal]:
    """Every refusal the suite knows, by name."""
    cases: dict[str, Refusal] = {}
    for name, (data, expected) in FILES.items():
        cases[f"file: {name}"] = Refusal(lambda d, data=data: data, expected)
    for name, (edit, expected) in SETTINGS.items():
        cases[f"setting: {name}"] = Refusal(lambda d, edit=edit: edit(_good(d)), expected)
    for name, (uri, expected) in TRACKING.items():
        cases[f"tracking: {name}"] = Refusal(_good, expected, lambda d, x, uri=uri: ["--tracking-uri", uri(d)])
    for address, expected in ADDRESSES.items():
        cases[f"address: {address}"] = Refusal(_good, expected, lambda d, x, a=address: ["--address", a])
    cases |= {
        "a value echoed in part": Refusal(lambda d: _good(d) + "seeds: '" + "9" * 100_000 + "'\n", "more characters"),
        "a --set value over the file's": Refusal(
            _good, "base.train.epochs (--set): 0 is invalid", lambda d, x: ["--set", "base.train.epochs=0"]
        ),
        "a --set value of aliases": Refusal(
            _good, "seeds", lambda d, x: ["--set", f"description=&a {'x' * 300}", "--set", "seeds=[*a, *a]"]
        ),
        "a dry run with missing data": Refusal(
            lambda d: _good(d, data={"name": "cifar10", "path": str(d / "none")}),
            "data.path=",
            lambda d, x: ["--dry-run"],
        ),
        "an arm's data below a batch": Refusal(
            lambda d: _good(d).replace("mto.lambda_e: 0.1", "data.max_train: 30"),
            "training images are fewer than train.batch_size=64",
        ),
        "a DTM teacher of another encoder": Refusal(
            lambda d: _good(d).replace(
                "mto: {mto.lambda_e: 0.1}", f"mto: {{mim.method: dtm, mim.dtm_teacher: {d}/teacher.pt}}"
            ),
            "is invalid: weights of the configured encoder",
            setup=_teacher,
        ),
        "nothing to resume": Refusal(
            _good, "--resume: no earlier invocation of study 'bad'", lambda d, x: ["--resume"]
        ),
        "a resume of a changed study": Refusal(
            _good,
            "--resume: the study differs from the interrupted invocation",
            lambda d, x: ["--resume"],
            setup=_earlier_invocation,
        ),
        "a study another driver runs": Refusal(_good, "is being run by another driver", setup=_held),
        "a tracking server that does not answer": Refusal(
            _good,
            "tracking server http://127.0.0.1:1 is unreachable",
            lambda d, x: ["--tracking-uri", "http://127.0.0.1:1"],
        ),
        "an HTTP server as the tracking server": Refusal(
            _good,
            "answers, but not as an MLflow tracking server",
            lambda d, x: ["--tracking-uri", f"http://{x}"],
            setup=plain_http_server,
        ),
        "an HTTP server at --address": Refusal(
            _good, "no Ray cluster answers at 127.0.0.1:", lambda d, x: ["--address", x], setup=plain_http_server
        ),
        "a silent server at --address": Refusal(
            _good, "(nothing answered within 3 s)", lambda d, x: ["--address", x], setup=_silent_server
        ),
        "an s3 storage that cannot be reached": Refusal(
            lambda d: _good(d).replace(f"storage: {d / 'ray'}", "storage: s3://a-bucket/x"),
            "storage s3://a-bucket/x cannot be used: When getting information for bucket 'a-bucket'",
            env=S3_UNREACHABLE,
        ),
    }
    return cases | _resources(local_node())


def _ray_processes() -> list[str]:
    """The command lines of Ray's processes among this process's descendants (a raylet, a GCS, Ray's workers)."""
    of, found, frontier = parents(), [], {os.getpid()}
    while frontier:
        frontier = {child for child, parent in of.items() if parent in frontier}
        found += frontier
    lines = []
    for pid in found:
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "/ray/" in line or line.startswith("ray::"):
            lines.append(line[:200])
    return lines


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_every_refusal_leaves_nothing(tmp_path, capsys, monkeypatch):
    failed = []
    for i, (name, case) in enumerate(refusals().items()):
        folder = tmp_path / f"case{i:03d}"
        folder.mkdir()
        with case.setup(folder) as extra, monkeypatch.context() as env:
            for key, value in case.env.items():
                env.setenv(key, value)
            env.chdir(folder)
            study = case.study(folder)
            (folder / STUDY).write_bytes(study if isinstance(study, bytes) else study.encode())
            before = _listing(folder)
            capsys.readouterr()
            code = main([STUDY, *case.args(folder, extra)])
            lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
            left = sorted(set(_listing(folder)) - set(before))
        said = " ".join(" ".join(lines).split())
        ray = sys.modules.get("ray")
        problems = [
            f"exit {code}" if code != 2 else "",
            f"{len(lines)} lines" if len(lines) != 1 else "",
            f"no {case.expected!r}" if case.expected not in said else "",
            f"left {left}" if left else "",
            "Ray is initialised" if ray is not None and ray.is_initialized() else "",
            f"Ray processes {_ray_processes()}" if _ray_processes() else "",
        ]
        if any(problems):
            failed.append(f"{name}: {'; '.join(p for p in problems if p)}: {said[:300]}")
    assert not failed, f"{len(failed)} refusals of {len(refusals())}:\n" + "\n".join(failed)
