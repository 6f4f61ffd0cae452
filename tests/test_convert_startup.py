"""Start-up work of ``biomarkers ingest``: its pool's workers are forked with the coordinator's imports."""

import os
import signal
import subprocess
import sys
import textwrap
import time


def run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_forked_ingest_pool_workers_share_the_coordinators_imports():
    """The local pool of ``ingest`` forks: its workers start with the coordinator's modules."""
    out = run(f"""
        import os, sys
        from biomarkers.dicom.ingest import Ingest
        from biomarkers.executors import get_executor

        def modules(_):
            return os.getpid(), os.getppid(), "nibabel" in sys.modules, "pydicom" in sys.modules

        ex = get_executor("local:2", preload=Ingest.PRELOAD, context="fork")
        ex.start()
        res = [o.value for o in ex.map_unordered(modules, [(str(i), i) for i in range(4)])]
        print(ex.started_with, all(ppid == os.getpid() and nib and dcm for _, ppid, nib, dcm in res))
        ex.close()
    """)
    assert out == "fork True"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie (exited, not reaped yet) is not alive
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_forked_workers_die_with_a_killed_coordinator():
    """A coordinator killed outright (SIGKILL: no clean-up runs) leaves no forked worker behind (they
    would hold copies of its output lock): the kernel sends them SIGTERM (PR_SET_PDEATHSIG)."""
    code = textwrap.dedent("""
        import os, sys, time
        from biomarkers.executors import get_executor

        def pid(_):
            return os.getpid()

        ex = get_executor("local:2", context="fork")
        ex.start()
        pids = {o.value for o in ex.map_unordered(pid, [(str(i), i) for i in range(8)])}
        print(ex.started_with, *sorted(pids), flush=True)
        time.sleep(60)
    """)
    coord = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        words = coord.stdout.readline().split()
        assert words[0] == "fork", words
        workers = [int(w) for w in words[1:]]
        assert workers and all(_alive(w) for w in workers)
        coord.send_signal(signal.SIGKILL)
        coord.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "forked workers outlived their coordinator"
    finally:
        if coord.poll() is None:
            coord.kill()
        for w in workers:  # on failure: do not leave them running
            if _alive(w):
                os.kill(w, signal.SIGKILL)



def test_spawned_workers_start_with_sigint_blocked(tmp_path):
    """A Ctrl-C reaching spawned workers while they still start (before their initialiser ignores
    SIGINT) does not kill them: every worker, the first included (creating a spawning pool starts
    multiprocessing's resource tracker, which unblocks SIGINT), is launched with SIGINT blocked."""
    (tmp_path / "pidmod.py").write_text("import os\n\ndef pid(_):\n    return os.getpid()\n")
    (tmp_path / "coordinator.py").write_text(textwrap.dedent("""
        import os, signal
        from pidmod import pid
        from biomarkers.executors import get_executor

        if __name__ == "__main__":
            ex = get_executor("local:2", context="spawn")
            ex.start()  # the workers are still starting: a spawned interpreter takes 0.1-1 s
            workers = set(ex._pool._processes)
            for w in workers:
                os.kill(w, signal.SIGINT)
            res = {o.value for o in ex.map_unordered(pid, [(str(i), None) for i in range(4)]) if o.ok}
            print(ex.started_with, len(workers), res <= workers, flush=True)  # the same workers did the items
            ex.close()
    """))
    out = subprocess.run([sys.executable, str(tmp_path / "coordinator.py")], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["spawn", "2", "True"], (out.stdout, out.stderr)
    assert "KeyboardInterrupt" not in out.stderr, out.stderr
