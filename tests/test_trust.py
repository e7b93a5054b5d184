"""Results you can trust after a retrain, a crash or a second writer, through the real ``nasplat`` CLI in subprocesses:

* retrain, then search: the search names the changed supernet and refuses; ``nasplat
  run`` re-runs exactly the stale stages (search, export), names them, and the new
  trials and manifest come from the new weights; a resume after a changed ``train.lr``
  is one line naming it;
* two concurrent searches on one run folder: the second exits 2 naming the first's pid,
  the first completes its budget with no failed trial;
* SIGINT during a search: exit 130, and ``--resume`` completes with no duplicate;
* disk full during a checkpoint write (a small tmpfs mounted by the test): one line, exit
  1, no temp file, the previous checkpoint loads.

Plus in-process checks of the pieces (provenance records, locks, atomic writes, CSV
appends, OSError lines, bundle limits, the shipped predictor's machine check).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from _tiny_space import TINY_SPACE

REPO = Path(__file__).resolve().parent.parent


def write_exp(root: Path, train: str, search: str = "", extra: str = "", name: str = "t") -> Path:
    p = root / "exp.yaml"
    p.write_text(f"name: {name}\nseed: 0\nspace:\n{TINY_SPACE}data: {{name: digits, resolution: 12, "
                 f"batch_size: 64, calib_images: 64}}\ntrain: {train}\n"
                 + (f"search: {search}\n" if search else "") + "export: {latency_profile: null}\n" + extra)
    return p


def cli(root: Path, *argv: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "nasplat.cli", *argv], cwd=root, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


def error_line(res: subprocess.CompletedProcess, status: int = 2) -> str:
    """The command's one error line (progress lines may precede it, nothing follows)."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("nasplat: error: ")]
    assert res.returncode == status, res.stderr[-3000:]
    assert len(errors) == 1 and lines[-1] == errors[0], res.stderr[-3000:]
    return errors[0]


def trials(run: Path) -> dict[str, float]:
    with open(run / "search" / "trials.csv", newline="") as f:
        return {r["arch_id"]: float(r["accuracy"]) for r in csv.DictReader(f)}


def sha256(path: Path) -> str:
    from nasplat.io import file_sha256

    return "sha256:" + file_sha256(path)


def test_retrain_makes_search_and_export_stale_and_run_redoes_exactly_those(tmp_path):
    search = "{objectives: [accuracy, macs], budget: 6, population: 3, workers: 1, val_images: 200}"
    p = write_exp(tmp_path, "{strategy: sandwich, epochs: 1, lr: 0.05, batch_size: 256}", search)
    run = tmp_path / "runs" / "t"
    cli(tmp_path, "run", p.name)  # train (5 steps), search, export
    ckpt = run / "supernet" / "supernet.safetensors"
    old_sha, old_acc = sha256(ckpt), trials(run)
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert {e["checkpoint_sha256"] for e in manifest["subnets"]} == {old_sha[7:]}

    # an interrupted run (last, no final) resumed after train.lr changed: one line naming it
    final = ckpt.read_bytes()
    ckpt.unlink()
    p.write_text(p.read_text().replace("lr: 0.05", "lr: 0.3"))
    line = error_line(cli(tmp_path, "train", p.name, "--resume", check=False))
    assert "train.lr" in line and "0.05 -> 0.3" in line and "cannot resume" in line, line
    ckpt.write_bytes(final)

    # retrain with other settings; the search names the changed supernet and keeps its outputs
    p.write_text(p.read_text().replace("epochs: 1", "epochs: 2").replace("batch_size: 256}", "batch_size: 64}"))
    cli(tmp_path, "train", p.name, "--force")
    new_sha = sha256(ckpt)
    assert new_sha != old_sha
    before = (run / "search" / "trials.csv").read_bytes()
    line = error_line(cli(tmp_path, "search", p.name, check=False))
    assert "supernet" in line and old_sha[:19] in line and new_sha[:19] in line and "--force" in line, line
    assert (run / "search" / "trials.csv").read_bytes() == before

    # `nasplat run` re-runs exactly the stale stages and names them
    res = cli(tmp_path, "run", p.name)
    stale = [ln.strip() for ln in res.stderr.splitlines() if "stale (" in ln]
    assert [s.split(":")[0] for s in stale] == ["search", "export"], res.stderr[-3000:]
    assert all(f"supernet {old_sha[:19]} -> {new_sha[:19]}" in s for s in stale), stale
    assert "stale stages run again: search, export" in res.stdout
    assert json.loads((run / "search" / "provenance.json").read_text())["inputs"]["supernet"] == new_sha
    new_acc = trials(run)
    common = set(old_acc) & set(new_acc)
    assert len(new_acc) == 6 and common
    # two epochs at batch 64 against five steps: every arch evaluated both times is better now
    assert all(new_acc[a] > old_acc[a] + 0.1 for a in common), (old_acc, new_acc)
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert {e["checkpoint_sha256"] for e in manifest["subnets"]} == {new_sha[7:]}
    front = {r["arch_id"] for r in csv.DictReader(open(run / "search" / "pareto.csv"))}
    assert {e["id"] for e in manifest["subnets"]} == front


def _journal_trials(path: Path) -> list:
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


WAIT_FOR_LOCK = """
import sys, time
from pathlib import Path
import nasplat.cli
from nasplat.experiment import load_experiment
from nasplat.search.stage import build_problem
build_problem(load_experiment(sys.argv[3]))  # every import and cache warm before the wait: the attempt is immediate
lock = Path(sys.argv[1])
while not (lock.exists() and lock.read_text().strip()):
    time.sleep(0.005)
sys.exit(nasplat.cli.main(sys.argv[2:]))
"""


def test_two_concurrent_searches_second_exits_naming_the_first(tmp_path):
    p = tmp_path / "exp.yaml"  # a large space: the sampler never slows down on duplicates
    p.write_text("name: t\nspace: ofa_mbv3_small\nsearch: {objectives: [macs, params], budget: 300, population: 10}\n")
    out = tmp_path / "runs" / "t" / "search"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    second = subprocess.Popen([sys.executable, "-c", WAIT_FOR_LOCK, str(out / ".lock"), "search", p.name],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = subprocess.Popen([sys.executable, "-m", "nasplat.cli", "search", p.name], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err2 = second.communicate(timeout=300)
    _, err1 = first.communicate(timeout=300)
    line = error_line(subprocess.CompletedProcess([], second.returncode, "", err2))
    assert line == f"nasplat: error: runs/t/search: in use by another nasplat process (pid {first.pid}); wait for it " \
                   "to finish or stop it", line
    assert first.returncode == 0 and "Traceback" not in err1, err1[-3000:]
    ts = _journal_trials(out / "study.journal")
    assert sum(t.state.name == "COMPLETE" for t in ts) == 300
    assert not [t.number for t in ts if t.state.name != "COMPLETE" and "duplicate_of" not in t.user_attrs]
    assert not (out / ".lock").exists()


def test_sigint_during_search_then_resume_has_no_duplicate(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("name: t\nspace: ofa_mbv3_small\nsearch: {objectives: [macs, params], budget: 150, population: 5}\n")
    out = tmp_path / "runs" / "t" / "search"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nasplat.cli", "search", p.name], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def complete() -> int:
        if not (out / "study.journal").exists():
            return 0
        n = 0
        for ln in (out / "study.journal").read_text().splitlines():
            try:
                op = json.loads(ln)
            except ValueError:
                continue
            n += op.get("op_code") == 6 and op.get("state") == 1
        return n

    t0 = time.monotonic()
    while complete() < 8:
        assert proc.poll() is None, "the search ended before the interrupt"
        assert time.monotonic() - t0 < 240
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "nasplat: interrupted", err[-3000:]
    done = complete()
    assert 8 <= done < 150
    cli(tmp_path, "search", p.name, "--resume")
    ids = [r["arch_id"] for r in csv.DictReader(open(out / "trials.csv"))]
    assert len(ids) == len(set(ids)) == 150
    ts = _journal_trials(out / "study.journal")
    complete_ids = [t.user_attrs["arch_id"] for t in ts if t.state.name == "COMPLETE"]
    assert len(complete_ids) == len(set(complete_ids)) == 150


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a given size mounted under tmp_path (root only), unmounted after."""
    mounts = []

    def mount(size_bytes: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs (a disk to fill) needs root")
        d = tmp_path / "disk"
        d.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(d)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
        mounts.append(d)
        return d

    yield mount
    for d in mounts:
        subprocess.run(["umount", str(d)], check=False)


def test_disk_full_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, small_disk):
    from nasplat.checkpoint import load_checkpoint
    from nasplat.experiment import load_experiment
    from nasplat.supernet import build_supernet

    p = write_exp(tmp_path, "{strategy: uniform, epochs: 3, lr: 0.05, batch_size: 256}",
                  extra="output_dir: disk/runs\n")
    exp = load_experiment(p)
    model = sum(t.numel() * t.element_size() for t in build_supernet(exp.space).state_dict().values())
    last = 2 * model + 16_384  # weights + momentum + RNG state and the header
    disk = small_disk(int(1.5 * last) + 48 * 1024)  # room for one checkpoint and the small files, not two
    res = cli(tmp_path, "train", p.name, check=False)
    line = error_line(res, status=1)
    folder = disk / "runs" / "t" / "supernet"
    assert "disk/runs/t/supernet/last.safetensors: disk full" in line, line
    assert not [q.name for q in folder.iterdir() if q.name.endswith(".tmp")]
    state, meta = load_checkpoint(folder / "last.safetensors", exp.space.hash())
    assert meta["epoch"] == 1 and set(state) >= {"model", "optimizer"}
    assert not (folder / "supernet.safetensors").exists()
    side = folder / "last.json"  # the sidecar is absent or describes the file beside it
    assert not side.exists() or json.loads(side.read_text())["sha256"] == sha256(folder / "last.safetensors")[7:]


# -- the pieces, in-process -------------------------------------------------------------------
def test_provenance_names_what_changed(tmp_path):
    from nasplat import provenance
    from nasplat.errors import UserError

    provenance.record(tmp_path, "train", {"train.lr": 0.05, "train.epochs": 3, "space": "ab"})
    now = {"train.lr": 0.1, "train.epochs": 3, "space": "ab", "data.augment.preset": "ofa"}
    assert provenance.changed(tmp_path, now) == ["data.augment.preset", "train.lr"]
    with pytest.raises(UserError) as e:
        provenance.check(tmp_path, "train", now, has_outputs=True, resume=True, file="exp.yaml")
    assert e.value.line().startswith("exp.yaml: data.augment.preset, train.lr: ")
    assert "train.lr 0.05 -> 0.1" in e.value.line() and "cannot resume" in e.value.line()
    assert provenance.check(tmp_path, "train", now, has_outputs=True, force=True) == ["data.augment.preset",
                                                                                        "train.lr"]
    assert provenance.check(tmp_path, "train", now, has_outputs=False) == []


def test_lock_refuses_a_second_writer_and_leaves_nothing(tmp_path):
    from nasplat.errors import UserError
    from nasplat.lock import stage_lock

    with stage_lock(tmp_path / "run", "search") as folder:
        assert (folder / ".lock").read_text().split() == [str(os.getpid())]
        with pytest.raises(UserError, match=rf"in use by another nasplat process \(pid {os.getpid()}\)"):
            with stage_lock(tmp_path / "run", "search"):
                pass
        assert (folder / ".lock").exists()  # the failed attempt did not take it away
    assert not (tmp_path / "run").exists()  # lock file and the folders it made are gone


def test_atomic_write_failure_keeps_the_old_file_and_no_temp(tmp_path):
    from nasplat.io import atomic_path, clean_temps, write_text

    p = tmp_path / "a.json"
    write_text(p, "old")
    assert oct(p.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    with pytest.raises(OSError) as e:
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise OSError(28, "No space left on device")
    assert e.value.filename == str(p)
    assert p.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["a.json"]
    # a kill leaves a temp naming a dead writer: cleaned; a live writer's is kept
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f".a.json.{dead}.x1.tmp").write_text("x")
    (tmp_path / ".a.json.k1ll3d.tmp").write_text("x")
    (tmp_path / f".a.json.{os.getppid()}.x2.tmp").write_text("x")
    removed = clean_temps(tmp_path)
    assert sorted(q.name for q in removed) == sorted([f".a.json.{dead}.x1.tmp", ".a.json.k1ll3d.tmp"])
    assert (tmp_path / f".a.json.{os.getppid()}.x2.tmp").exists()


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


def test_csv_rows_are_appended_and_a_torn_row_is_cut(tmp_path):
    from nasplat.io import append_csv_rows

    p = tmp_path / "log.csv"
    append_csv_rows(p, [{"a": 1, "b": 2}], ["a", "b"])
    inode = p.stat().st_ino
    with open(p, "a") as f:
        f.write("3,")  # a kill in the middle of a row
    append_csv_rows(p, [{"a": 5, "b": 6}], ["a", "b"])
    assert p.read_text() == "a,b\n1,2\n5,6\n"
    assert p.stat().st_ino == inode  # appended in place, not rewritten


def test_os_errors_are_one_line_with_cause_and_status():
    from nasplat.errors import os_error_line

    assert os_error_line(OSError(28, "No space left on device", "/d/x")) == \
        ("/d/x: disk full (No space left on device)", 1)
    assert os_error_line(PermissionError(13, "Permission denied", "/etc/x")) == ("/etc/x: permission denied", 1)
    assert os_error_line(FileNotFoundError(2, "No such file or directory", "b.tar")) == \
        ("b.tar: not found (No such file or directory)", 2)


def test_cli_reports_a_permission_error_in_one_line(tmp_path, capsys):
    """A run folder that cannot be written (read-only file system: root ignores modes)."""
    from nasplat.cli import main

    p = write_exp(tmp_path, "{epochs: 1}", extra="output_dir: /proc/nasplat_cannot_write\n")
    rc = main(["train", str(p)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc in (1, 2) and len(err) == 1 and err[0].startswith("nasplat: error: /proc/nasplat_cannot_write"), err


def test_bundle_extraction_size_limit(tmp_path):
    import io as _io

    from nasplat.hw.runner import BundleError, safe_extract

    tar = tmp_path / "b.tar"
    with tarfile.open(tar, "w") as tf:
        for name in ("manifest.json", "models/a.onnx"):
            info = tarfile.TarInfo(name)
            info.size = 600
            tf.addfile(info, _io.BytesIO(b"\0" * 600))
    with pytest.raises(BundleError, match="would extract to 1200 bytes, more than the limit of 1000 bytes"):
        safe_extract(tar, tmp_path / "out", max_bytes=1000)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert safe_extract(tar, tmp_path / "ok", max_bytes=1200) == (tmp_path / "ok").resolve()


def test_shipped_predictor_is_refused_for_another_machine(tmp_path):
    from nasplat.errors import UserError
    from nasplat.hw.profile import load_profile
    from nasplat.predict._base import load_latency_predictor, this_machine
    from nasplat import load_space

    space = load_space("ofa_mbv3_small")
    prof = load_profile("local-cpu").model_copy(update={"intra_op_threads": 2})
    with pytest.raises(UserError) as e:
        load_latency_predictor(tmp_path, "local-cpu", space, prof)
    line = e.value.line()
    assert "does not describe this machine" in line and "intra_op_threads 1 there, 2 here" in line, line
    assert "nasplat profile EXP --device local-cpu" in line
    # a transfer base describes another machine on purpose
    assert load_latency_predictor(tmp_path, "local-cpu", space, prof, check_machine=False).predict(
        [space.max_arch()])[0] > 0
    assert this_machine(prof)["intra_op_threads"] == 2
