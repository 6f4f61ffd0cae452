"""Start-up work of ``biomarkers ingest``: what its processes import, and that deferring an import
changes nothing for the code that uses the module."""

import subprocess
import sys
import textwrap


def run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_pydicom_through_load_pydicom_does_not_import_requests_until_used():
    out = run("""
        import sys
        from biomarkers.dicom.header import load_pydicom
        load_pydicom()
        import nibabel, pydicom.data.download as d
        print(d.HAVE_REQUESTS, "requests.models" in sys.modules)
        import requests
        from requests import Session          # what a user of requests does (mlflow, dicomweb-client)
        import requests.adapters
        print(requests.codes.ok, Session.__module__, type(sys.modules["requests"]).__name__)
    """)
    assert out.splitlines() == ["True False", "200 requests.sessions module"]


def test_defer_import_of_a_missing_or_imported_module_changes_nothing():
    out = run("""
        import sys, json
        from biomarkers.dicom.header import defer_import
        defer_import("no_such_module_xyz")
        defer_import("json")
        try:
            import no_such_module_xyz
        except ImportError:
            print("missing still missing")
        print(sys.modules["json"] is json)
    """)
    assert out.splitlines() == ["missing still missing", "True"]


def test_forked_ingest_pool_workers_share_the_coordinators_imports(tmp_path):
    """The local pool of ``ingest`` forks (workers start with the coordinator's modules) and its workers
    end with the command."""
    out = run(f"""
        import os, sys
        from biomarkers.dicom.ingest import Ingest
        from biomarkers.executors import get_executor

        def modules(_):
            return os.getpid(), os.getppid(), "nibabel" in sys.modules, "requests.models" in sys.modules

        ex = get_executor("local:2", preload=Ingest.PRELOAD, context="fork")
        ex.start()
        res = [o.value for o in ex.map_unordered(modules, [(str(i), i) for i in range(4)])]
        print(ex.started_with, all(ppid == os.getpid() and nib and not req for _, ppid, nib, req in res))
        ex.close()
    """)
    assert out == "fork True"
