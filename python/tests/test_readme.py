"""The README's Python samples, run as written (the C test worker's installed
path replaced by the built one)."""

import os
import re
import subprocess
import sys

from conftest import HERE, ROOT

INSTALLED_TESTWORKER = "/usr/local/libexec/herd/herd-testworker"


def readme_samples():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("\n### Python\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def run_sample(index, testworker):
    """What README's Python sample ``index`` prints, run with the built test worker."""
    sample = readme_samples()[index].replace(INSTALLED_TESTWORKER, testworker)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    out = subprocess.run([sys.executable, "-c", sample], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_readme_master(herdd, testworker):
    assert run_sample(0, testworker) == ["45", "[0, 1, 2]",
                                         "function_failed product of 1..30 overflows"]


def spawn_sample(m, index, tmp_path):
    """README's worker sample ``index`` as an executable script, spawned."""
    script = tmp_path / f"worker{index}.py"
    script.write_text(readme_samples()[index])
    script.chmod(0o755)
    return m.spawn(str(script), env={"PYTHONPATH": os.path.dirname(HERE),
                                     "PYTHONDONTWRITEBYTECODE": "1"})


def test_readme_worker(herdd, tmp_path):
    import herd
    with herd.connect() as m:
        with spawn_sample(m, 1, tmp_path).connect() as c:
            assert c.call("sum", {"n": 10}) == 45
            s = c.stream("count", {"n": 3})
            assert list(s) == [0, 1, 2] and s.result == {"count": 3}


def test_readme_asyncio(herdd, testworker):
    assert run_sample(2, testworker) == ["[45, 4950]", "[0, 1, 2]"]


def test_readme_pool(herdd, testworker, tmp_path):
    pool = next(s for s in readme_samples() if "herd.Pool" in s)
    script = tmp_path / "pool.py"  # a pool's workers run the script again: it needs a file
    script.write_text(pool.replace(INSTALLED_TESTWORKER, testworker))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[3, 2, 1]", "6000", "[0, 0, 1, 3, 6]"]


def test_readme_async_worker(herdd, tmp_path):
    import herd
    with herd.connect() as m:
        with spawn_sample(m, 3, tmp_path).connect() as c:
            slow = c._conn.request("fetch", {"s": 1.0})
            assert c.call("sum", {"n": 10}) == 45  # answered while fetch awaits
            assert not c._conn.replied(slow)
            assert c._conn.wait(slow, 10) == 1.0
