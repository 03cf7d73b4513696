"""utils/slurm.pl on a real Slurm: munged, slurmctld and slurmd started on localhost for the test.

Installs Debian's slurm-wlm and munge when missing and root; skips, saying why,
where the daemons cannot start.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, free_port, make_wav_data_dir, run_script

DAEMONS = ("munged", "slurmctld", "slurmd")


def find_daemons():
    return {name: shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") for name in DAEMONS}


def install_slurm():
    """The daemons' paths, installing the Debian packages when root; None and a reason otherwise."""
    paths = find_daemons()
    if all(paths.values()):
        return paths, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "slurm-wlm/munge not installed and not root with apt-get to install them"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            return None, f"{' '.join(cmd)} failed: {proc.stderr[-500:]}"
    paths = find_daemons()
    return (paths, "") if all(paths.values()) else (None, f"daemons still missing after install: {paths}")


def wait_for(check, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def slurm():
    """A one-node Slurm cluster on this machine; yields the environment for its clients."""
    paths, reason = install_slurm()
    if paths is None:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("starting slurmd needs root")
    # Under /tmp, not pytest's private tmp dir: user munge must reach the key and socket.
    top = Path(tempfile.mkdtemp(prefix="pyspk-slurm-"))
    os.chmod(top, 0o755)
    procs = []
    try:
        socket_path = start_munged(paths, top, procs)
        conf = write_slurm_conf(top, socket_path)
        env = dict(os.environ, SLURM_CONF=str(conf))
        for daemon in ("slurmctld", "slurmd"):
            procs.append(subprocess.Popen([paths[daemon], "-D", "-f", str(conf)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def node_idle():
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True,
                                 check=False).stdout
            return out.strip().startswith("idle")
        if not wait_for(node_idle, 60):
            logs = "".join((top / "log" / f).read_text()[-800:] for f in ("slurmctld.log", "slurmd.log")
                           if (top / "log" / f).exists())
            pytest.skip(f"the Slurm node did not become idle:\n{logs}")
        yield env
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(top, ignore_errors=True)


def start_munged(paths, top, procs):
    """Start munged as user munge with its own key and socket under ``top``; return the socket path."""
    munge_dir = top / "munge"
    munge_dir.mkdir()
    munge_dir.chmod(0o711)
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    socket_path = munge_dir / "munge.socket"
    subprocess.run(["chown", "-R", "munge:munge", str(munge_dir)], check=True)
    munged = [paths["munged"], "--foreground", "--force", f"--key-file={key}", f"--socket={socket_path}",
              f"--pid-file={munge_dir / 'munged.pid'}", f"--seed-file={munge_dir / 'seed'}",
              f"--log-file={munge_dir / 'munged.log'}"]
    with open(top / "munged.out", "w") as out:
        procs.append(subprocess.Popen(["runuser", "-u", "munge", "--", *munged], stdout=out, stderr=out))
    if not wait_for(socket_path.exists, 20):
        pytest.skip(f"munged did not start: {(top / 'munged.out').read_text()[-500:]}")
    return socket_path


def write_slurm_conf(top, socket_path):
    """A slurm.conf for one node (this host) with free ports and state, spool and logs under ``top``."""
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    with open("/proc/meminfo") as f:
        mem_mb = int(f.readline().split()[1]) // 1024 // 2
    for d in ("state", "spool", "log"):
        (top / d).mkdir()
    conf = top / "slurm.conf"
    conf.write_text(f"""ClusterName=pyspk{os.getpid()}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={socket_path}
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmUser=root
SlurmdUser=root
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation={top / 'state'}
SlurmdSpoolDir={top / 'spool'}
SlurmctldPidFile={top / 'slurmctld.pid'}
SlurmdPidFile={top / 'slurmd.pid'}
SlurmctldLogFile={top / 'log' / 'slurmctld.log'}
SlurmdLogFile={top / 'log' / 'slurmd.log'}
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
JobCompType=jobcomp/none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def test_make_fbank_through_slurm(slurm, tmp_path):
    data = make_wav_data_dir(str(tmp_path / "corpus"), n_spk=2, n_utt=2)
    proc = run_script(["steps/make_fbank.sh", "--nj", "2", "--cmd", "utils/slurm.pl --mem 500M", data], env=slurm)
    assert "scancel" in proc.stderr
    with open(os.path.join(data, "feats.scp")) as f:
        assert len(f.readlines()) == 4
    for n in (1, 2):
        with open(os.path.join(data, "log", f"make_fbank_data.{n}.log")) as f:
            lines = f.read().splitlines()
        assert lines[0].startswith("# ") and f"fbank_data.{n}.ark" in lines[0], lines[0]
        assert lines[-1].startswith("# Ended (code 0)")


def test_job_array_with_a_failing_job(slurm, tmp_path):
    log = tmp_path / "log" / "x.JOB.log"
    proc = run_script([os.path.join(ROOT, "utils", "slurm.pl"), "--max-jobs-run", "2", "JOB=2:4", str(log),
                       "bash", "-c", "echo job JOB; [ JOB != 3 ]"], env=slurm, check=False)
    assert proc.returncode == 1, proc.stderr
    assert f"1 / 3 failed, log is in {tmp_path}/log/x.3.log" in proc.stderr
    for n in (2, 3, 4):
        lines = (tmp_path / "log" / f"x.{n}.log").read_text().splitlines()
        assert lines[0] == f"# bash -c echo job {n}; [ {n} != 3 ]"
        assert f"job {n}" in lines
        assert lines[-1].startswith(f"# Ended (code {1 if n == 3 else 0})")
