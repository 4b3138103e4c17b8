"""`clapforge embed ... OUT.lance`, `search` on a table and `index build`: incremental reruns, kills, model mismatch,
ANN against exact, filters, and table against parquet, on test-tiny and made-up audio."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torchcodec.encoders import AudioEncoder

import clapforge
from clapforge.cli import main as cli_main
from clapforge.inference.engine import EmbeddingEngine
from clapforge.tools import api, table, table_search
from clapforge.tools.embed import TEST_SLEEP_ENV, embed_files
from conftest import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
FILES = {"a.wav": (1.0, 300), "b.wav": (2.5, 500), "sub/c.wav": (4.0, 700), "sub/d.wav": (12.0, 900)}


def _write(path: Path, seconds: float, freq: float, seed: int = 0, sr: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    noise = 0.02 * np.random.default_rng(seed).standard_normal(t.shape)
    audio = (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)
    AudioEncoder(torch.from_numpy(audio[None]), sample_rate=sr).to_file(str(path))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("table")
    save_tiny_model(root / "model", seed=1)
    for i, (key, (seconds, freq)) in enumerate(FILES.items()):
        _write(root / "audio" / key, seconds, freq, seed=i)
    return root


@pytest.fixture
def folder(work, tmp_path):
    """A private copy of the audio folder, for tests that add, change and delete files."""
    shutil.copytree(work / "audio", tmp_path / "audio")
    return tmp_path / "audio"


@pytest.fixture
def clips_embedded(monkeypatch):
    """Counts the clips the model embeds in this process (every embed run goes through the engine's
    `embed_features`)."""
    counter = {"clips": 0}
    original = EmbeddingEngine.embed_features

    def counting(self, x, longer):
        counter["clips"] += x.shape[0]
        return original(self, x, longer)

    monkeypatch.setattr(EmbeddingEngine, "embed_features", counting)
    return counter


def _embed(model: Path, source: Path, out: Path, **kwargs):
    return embed_files(model, source, out, batch_size=2, part_size=2, progress=False, **kwargs)


def _rows(uri: Path, name: str = table.FILES) -> dict[str, dict]:
    tables = table.open_tables(uri)
    found = tables[name].to_arrow().to_pylist()
    return {(r["key"], r.get("window_start")): r for r in found} if name == table.WINDOWS else \
        {r["key"]: r for r in found}


def test_rerun_embeds_only_new_and_changed_files_and_drops_deleted_ones(work, folder, tmp_path, clips_embedded):
    out = tmp_path / "t.lance"
    first = _embed(work / "model", folder, out)
    assert first.computed == 4 and first.embedded == 4 and clips_embedded["clips"] == 4
    before = _rows(out)
    assert sorted(before) == sorted(FILES)
    row = before["b.wav"]
    assert row["path"] == str((folder / "b.wav").resolve()) and row["duration"] == pytest.approx(2.5)
    import hashlib
    assert row["content_hash"] == hashlib.sha1((folder / "b.wav").read_bytes()).hexdigest()
    assert row["model"] == str((work / "model").resolve()) and len(row["model_hash"]) == 64
    assert len(row["embedding"]) == 128

    again = _embed(work / "model", folder, out)
    assert again.up_to_date and again.computed == 0 and clips_embedded["clips"] == 4  # nothing recomputed

    _write(folder / "new.wav", 3.0, 1100, seed=9)
    grown = _embed(work / "model", folder, out)
    assert grown.computed == 1 and clips_embedded["clips"] == 5 and grown.embedded == 5  # only the new file
    after = _rows(out)
    for key in FILES:
        assert after[key]["embedding"] == before[key]["embedding"]  # unchanged rows untouched
    expected = api.embed_audio(folder / "new.wav", model=work / "model")[0]
    clips_embedded["clips"] -= 1  # that reference went through the engine too: count the table's embeds only
    np.testing.assert_allclose(after["new.wav"]["embedding"], expected.numpy(), atol=1e-5)

    _write(folder / "a.wav", 1.5, 1300, seed=10)  # same key, other bytes
    changed = _embed(work / "model", folder, out)
    assert changed.computed == 1 and clips_embedded["clips"] == 6
    replaced = _rows(out)
    assert len(replaced) == 5 and replaced["a.wav"]["duration"] == pytest.approx(1.5)
    assert replaced["a.wav"]["content_hash"] != before["a.wav"]["content_hash"]
    expected = api.embed_audio(folder / "a.wav", model=work / "model")[0]
    clips_embedded["clips"] -= 1
    np.testing.assert_allclose(replaced["a.wav"]["embedding"], expected.numpy(), atol=1e-5)

    (folder / "sub/c.wav").unlink()
    shrunk = _embed(work / "model", folder, out)
    assert shrunk.removed == 1 and shrunk.computed == 0 and clips_embedded["clips"] == 6
    assert sorted(_rows(out)) == ["a.wav", "b.wav", "new.wav", "sub/d.wav"]


def test_unreadable_files_listed_and_not_retried_until_they_change(work, folder, tmp_path, clips_embedded):
    out = tmp_path / "t.lance"
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x07" * 64)
    report = _embed(work / "model", folder, out)
    assert [e["key"] for e in report.errors] == ["broken.wav"] and report.embedded == 4
    assert [e["key"] for e in json.loads(Path(f"{out}.errors.json").read_text())] == ["broken.wav"]
    again = _embed(work / "model", folder, out)
    assert again.up_to_date and [e["key"] for e in again.errors] == ["broken.wav"]
    _write(folder / "broken.wav", 1.0, 400)  # repaired
    fixed = _embed(work / "model", folder, out)
    assert fixed.computed == 1 and fixed.errors == [] and fixed.embedded == 5 and clips_embedded["clips"] == 5


def _env(work: Path, **extra: str) -> dict:
    env = dict(os.environ, HF_HOME=str(work / "hf_home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=str(ROOT / "src"))
    env.update(extra)
    return env


def _committed(out: Path) -> int:
    try:
        return table.open_tables(out)[table.FILES].count_rows()
    except Exception:  # not created yet, or caught mid-creation: nothing committed
        return 0


def test_killed_run_leaves_a_consistent_table_that_the_rerun_completes(work, tmp_path):
    reference = tmp_path / "reference.lance"
    _embed(work / "model", work / "audio", reference, window=True)
    out = tmp_path / "killed.lance"
    cmd = [sys.executable, "-m", "clapforge", "embed", str(work / "model"), str(work / "audio"), str(out),
           "--part-size", "1", "--batch-size", "1", "--num-workers", "0", "--window", "--quiet", "--precision", "fp32"]
    proc = subprocess.Popen(cmd, env=_env(work, **{TEST_SLEEP_ENV: "30"}), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _committed(out) == 0:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no part was committed"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _committed(out) == 1  # killed while sleeping after the first part: one file, complete
    files = _rows(out)
    assert len(files) == 1 and all(k[0] in files for k in _rows(out, table.WINDOWS))  # no window without its file

    report = _embed(work / "model", work / "audio", out, window=True)
    assert report.computed == 3 and report.embedded == 4
    for name in (table.FILES, table.WINDOWS):
        done, expected = _rows(out, name), _rows(reference, name)
        assert sorted(done) == sorted(expected)
        for key, row in expected.items():
            np.testing.assert_allclose(done[key]["embedding"], row["embedding"], atol=1e-5)


def test_a_table_of_another_model_is_refused(work, tmp_path):
    out = tmp_path / "t.lance"
    _embed(work / "model", work / "audio", out)
    other = save_tiny_model(tmp_path / "other", seed=2)
    with pytest.raises(ValueError) as refused:
        _embed(other, work / "audio", out)
    message = str(refused.value)
    assert str((work / "model").resolve()) in message and str(other.resolve()) in message
    assert "--overwrite" in message
    assert cli_main(["embed", str(other), str(work / "audio"), str(out), "--quiet"]) == 2
    with pytest.raises(ValueError, match="window"):  # other settings are refused as well
        _embed(work / "model", work / "audio", out, window=True)
    report = _embed(other, work / "audio", out, overwrite=True)
    assert report.computed == 4 and {r["model"] for r in _rows(out).values()} == {str(other.resolve())}


def test_decoding_workers_are_not_forks_of_a_process_running_lancedb(work, tmp_path):
    """lancedb's threads run while a table is embedded; a worker forked from that process restarts lancedb's runtime
    and may inherit locks its threads held (lancedb then warns, in the child). Workers start from a fork server
    instead, and give the same embeddings as no workers. Run in a process of its own: pytest records the children's
    warnings."""
    cmd = [sys.executable, "-m", "clapforge", "embed", str(work / "model"), str(work / "audio"),
           str(tmp_path / "workers.lance"), "--num-workers", "2", "--quiet", "--precision", "fp32"]
    child = subprocess.run(cmd, env=_env(work), capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr
    assert "fork support" not in child.stderr
    _embed(work / "model", work / "audio", tmp_path / "inline.lance", num_workers=0)
    with_workers, inline = _rows(tmp_path / "workers.lance"), _rows(tmp_path / "inline.lance")
    assert sorted(with_workers) == sorted(inline)
    # Workers deliver clips in their own order, so a clip may share a batch with others, summed in another order
    # (and per CPU). The embeddings are unit vectors and test-tiny's sums have <= ~1e3 terms: rounding moves them by
    # ~sqrt(n) * 6e-8 ~ 2e-6 (measured 4.5e-8 AMX, 9.3e-8 AVX2 code paths); a clip embedded from the wrong samples
    # moves them by as much as two clips' embeddings differ.
    for key, row in inline.items():
        np.testing.assert_allclose(with_workers[key]["embedding"], row["embedding"], rtol=0, atol=1e-5)


def _clustered(n: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around random centres (like real embeddings, unlike uniform noise), and their centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), centres


def _write_vectors(out: Path, vectors: np.ndarray, part: int = 500) -> None:
    settings = {"model": "synthetic", "model_hash": "0" * 64, "embedding_dim": vectors.shape[1], "window": False}
    tables = table.create_tables(out, settings)
    for start in range(0, len(vectors), part):
        rows = [{"key": f"k{i:05d}", "path": f"/clips/{i % 7}/k{i:05d}.wav", "duration": float(i % 30),
                 "content_hash": str(i), "embedding": vectors[i]}
                for i in range(start, min(start + part, len(vectors)))]
        table.commit_part(tables, rows, settings)


def test_ann_search_agrees_with_exact_search(tmp_path):
    out = tmp_path / "vectors.lance"
    vectors, _ = _clustered(4000, 128, 40, seed=0)
    _write_vectors(out, vectors)
    assert table.build_index(out)[0]["action"].startswith("left exact") is False
    files = table.open_tables(out)[table.FILES]
    assert table.has_vector_index(files)
    rng = np.random.default_rng(1)
    queries = vectors[rng.choice(len(vectors), 50, replace=False)] + 0.2 * rng.standard_normal((50, 128))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    # A kept searcher (held columns, fast_search while fully indexed), one holding no columns, and the one-off call
    # (lance's whole query path, as before searchers existed) return the same rows and scores.
    kept, unheld = table_search.TableSearcher(out), table_search.TableSearcher(out, hold_max_rows=0)
    recalls = []
    for q in queries:
        truth = [f"k{i:05d}" for i in np.argsort(-(vectors @ q), kind="stable")[:10]]
        exact = [r["key"] for r in table_search.search_table(out, q, top_k=10, exact=True)]
        assert exact == truth
        ann = table_search.search_table(out, q, top_k=10)
        recalls.append(len(set(r["key"] for r in ann) & set(truth)) / 10)
        assert [r["score"] for r in ann] == sorted((r["score"] for r in ann), reverse=True)
        for searcher in (kept, unheld):
            for is_exact, expected in ((True, table_search.search_table(out, q, top_k=10, exact=True)), (False, ann)):
                found = searcher.search(q, top_k=10, exact=is_exact)
                assert [r["key"] for r in found] == [r["key"] for r in expected]
                assert [r["path"] for r in found] == [r["path"] for r in expected]
                assert [r["score"] for r in found] == pytest.approx([r["score"] for r in expected], abs=1e-6)
    assert np.mean(recalls) >= 0.95, recalls
    assert kept._states[table.FILES].rows is not None and unheld._states[table.FILES].rows is None

    # Filters apply before the top k, on the ANN path and the exact one alike.
    keep = np.array([i % 30 > 20 for i in range(len(vectors))])
    truth = [f"k{i:05d}" for i in np.argsort(-np.where(keep, vectors @ queries[0], -2), kind="stable")[:10]]
    for exact in (True, False):
        found = table_search.search_table(out, queries[0], top_k=10, where="duration > 20", exact=exact)
        assert len(found) == 10 and all(r["duration"] > 20 for r in found)
        if exact:
            assert [r["key"] for r in found] == truth
        assert kept.search(queries[0], top_k=10, where="duration > 20", exact=exact) == found

    assert table.build_index(out, exact=True)[0]["action"] == "dropped"
    assert not table.has_vector_index(table.open_tables(out)[table.FILES])


def _affinities() -> dict[int, set[int]]:
    """Allowed cores of every thread of this process (Linux)."""
    found = {}
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            found[int(tid)] = os.sched_getaffinity(int(tid))
    return found


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or not os.path.isdir("/proc/self/task"),
                    reason="thread affinity is read through Linux's /proc/self/task")
def test_a_search_leaves_every_thread_of_the_process_as_it_was(tmp_path, monkeypatch):
    """By default nothing process-wide changes: during an ANN query through a kept searcher, and after it, every
    thread of the process (lance's included) keeps the cores it had."""
    from lancedb.background_loop import LOOP

    out = tmp_path / "vectors.lance"
    vectors, _ = _clustered(2000, 64, 20, seed=0)
    _write_vectors(out, vectors)
    table.build_index(out)
    searcher = table_search.TableSearcher(out)
    searcher.search(vectors[0], top_k=3)  # lance starts its threads
    before = _affinities()
    assert len(before) > 2  # lance's threads are running

    during = []
    real_run = LOOP.run

    def run_and_look(coroutine):
        during.append(_affinities())
        return real_run(coroutine)

    monkeypatch.setattr(LOOP, "run", run_and_look)
    assert searcher.search(vectors[5], top_k=3)[0]["key"] == "k00005"
    assert table_search.search_table(out, vectors[6], top_k=3)[0]["key"] == "k00006"
    assert len(during) >= 2  # the queries (and the one-off call's opening of the table)
    for seen in [*during, _affinities()]:
        assert {t: cores for t, cores in seen.items() if t in before} == \
            {t: cores for t, cores in before.items() if t in seen}
    assert searcher.pinning is None


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="pinning to one core needs Linux and at least two cores")
def test_opted_in_pinning_runs_lance_on_one_core_and_gives_its_cores_back(tmp_path, monkeypatch):
    """With pin_threads, during a query lance's threads and lancedb's event-loop thread sit on one core; before and
    after, each has the cores it had (so index builds and writes keep all of them)."""
    from lancedb.background_loop import LOOP

    out = tmp_path / "vectors.lance"
    vectors, _ = _clustered(200, 16, 4, seed=0)
    _write_vectors(out, vectors)
    searcher = table_search.TableSearcher(out, pin_threads=True)
    pinning = searcher.pinning
    searcher.search(vectors[0], top_k=3)  # lance starts its threads
    loop_thread = LOOP.thread.native_id
    lance = pinning.lance_threads(loop_thread)
    assert loop_thread in lance and len(lance) > 1
    names = {Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in lance if t != loop_thread}
    assert names <= set(table_search.LANCE_THREAD_NAMES), names
    assert threading.get_native_id() not in lance  # the caller keeps its cores
    before = {t: os.sched_getaffinity(t) for t in lance}
    one_core = {min(os.sched_getaffinity(0))}

    seen = []
    real_run = LOOP.run

    def run_and_look(coroutine):
        seen.append({t: os.sched_getaffinity(t) for t in lance})
        return real_run(coroutine)

    monkeypatch.setattr(LOOP, "run", run_and_look)
    found = searcher.search(vectors[5], top_k=3)
    assert found[0]["key"] == "k00005"
    assert seen and all(cores == one_core for cores in seen[0].values()), seen
    assert {t: os.sched_getaffinity(t) for t in lance} == before

    # Overlapping queries (two users of a Space): pinned until the last one ends, then every thread's cores back.
    first, second = pinning.pinned(loop_thread), pinning.pinned(loop_thread)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert all(os.sched_getaffinity(t) == one_core for t in lance)
    second.__exit__(None, None, None)
    assert {t: os.sched_getaffinity(t) for t in lance} == before

    # Searchers of one process that pin share one ThreadPinning.
    assert table_search.TableSearcher(table.open_tables(out), pin_threads=pinning).pinning is pinning


def test_a_long_lived_search_finds_rows_appended_after_the_index(tmp_path):
    """A kept TableSearcher skips lance's check for unindexed rows only while the index covers every row: files
    embedded after `index build` are found by the next query all the same."""
    out = tmp_path / "vectors.lance"
    vectors, _ = _clustered(2000, 64, 20, seed=0)
    _write_vectors(out, vectors)
    table.build_index(out)
    tables = table.open_tables(out)
    files = tables[table.FILES]
    searcher = table_search.TableSearcher(tables)
    assert table_search.search_table(searcher, vectors[7], top_k=1)[0]["key"] == "k00007"  # the searcher's state
    assert searcher._states[table.FILES].fully_indexed

    new = np.random.default_rng(5).standard_normal(64).astype(np.float32)
    new /= np.linalg.norm(new)
    settings = table.table_settings(files)
    table.commit_part(tables, [{"key": "late.wav", "path": "/clips/late.wav", "duration": 3.0, "content_hash": "x",
                                "embedding": new}], settings)
    found = searcher.search(new, top_k=1)
    assert found[0]["key"] == "late.wav" and found[0]["score"] > 0.999
    assert not searcher._states[table.FILES].fully_indexed


def test_small_tables_stay_exact(tmp_path):
    out = tmp_path / "small.lance"
    _write_vectors(out, _clustered(300, 32, 4, seed=3)[0])
    report = table.build_index(out)[0]
    assert report["rows"] == 300 and report["action"].startswith("left exact")
    assert not table.has_vector_index(table.open_tables(out)[table.FILES])


LIGHT_SEARCH = """
import json, sys
import numpy as np
import clapforge_cli
clapforge_cli.RUNNING = True  # a process without a model (see clapforge_cli's docstring)
from clapforge.tools.table import open_tables
from clapforge.tools.table_search import TableSearcher
searcher = TableSearcher(open_tables(sys.argv[1]))
query = np.load(sys.argv[2])
found = {exact: [r["key"] for r in searcher.search(query, top_k=5, exact=exact)] for exact in (True, False)}
print(json.dumps({"found": found, "heavy": sorted({"torch", "transformers"} & set(sys.modules))}))
"""


def test_a_process_without_a_model_searches_without_torch(tmp_path):
    out = tmp_path / "vectors.lance"
    vectors, _ = _clustered(2000, 64, 20, seed=4)
    _write_vectors(out, vectors)
    table.build_index(out)
    np.save(tmp_path / "q.npy", vectors[7])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run([sys.executable, "-c", LIGHT_SEARCH, str(out), str(tmp_path / "q.npy")], env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    truth = [f"k{i:05d}" for i in np.argsort(-(vectors @ vectors[7]), kind="stable")[:5]]
    assert result["found"]["true"] == truth
    assert result["found"]["false"][0] == "k00007"


def test_index_defaults_follow_the_table_size():
    assert table.index_defaults(1_000_000) == {"num_partitions": 244, "num_bits": 4}
    assert table.index_defaults(100_000) == {"num_partitions": 24, "num_bits": 4}
    assert table.index_defaults(4000) == {"num_partitions": 1, "num_bits": 4}


def _table_out(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines()[2:]]


def test_cli_embed_search_index_on_a_table(work, tmp_path, capsys):
    out = tmp_path / "t.lance"
    assert cli_main(["embed", str(work / "model"), str(work / "audio"), str(out), "--quiet", "--num-workers", "0"]) == 0
    assert "4 embeddings (4 input(s) read by this run, 0 removed)" in capsys.readouterr().out
    assert cli_main(["search", str(out), "--audio", str(work / "audio" / "sub/c.wav"), "--top-k", "2"]) == 0
    rows = _table_out(capsys.readouterr().out)
    assert rows[0][2] == "sub/c.wav" and float(rows[0][1]) == pytest.approx(1.0, abs=1e-4) and len(rows) == 2
    assert cli_main(["search", str(out), "a high tone", "--where", "duration > 3", "--exact"]) == 0
    assert sorted(row[2] for row in _table_out(capsys.readouterr().out)) == ["sub/c.wav", "sub/d.wav"]
    assert cli_main(["index", "build", str(out)]) == 0
    assert "left exact" in capsys.readouterr().out
    assert cli_main(["search", str(work / "missing.lance"), "rain"]) == 2
    assert "missing.lance is not a clapforge table" in capsys.readouterr().err
    assert cli_main(["search", str(tmp_path / "x.parquet"), "rain", "--where", "duration > 3"]) == 2


def test_cli_embed_index_dir_writes_the_same_table_as_out_lance(work, tmp_path, capsys):
    model, audio, folder = str(work / "model"), str(work / "audio"), tmp_path / "library-index"
    common = ["--quiet", "--num-workers", "0"]
    assert cli_main(["embed", model, audio, "--index", str(folder), *common]) == 0
    assert f"wrote {folder}: 4 embeddings (4 input(s) read by this run, 0 removed)" in capsys.readouterr().out
    assert (folder / "files.lance").is_dir() and table.is_table(folder) and not table.is_table(tmp_path)
    assert cli_main(["embed", model, audio, "--index", str(folder), *common]) == 0
    assert f"{folder} is up to date (4 embeddings)" in capsys.readouterr().out
    assert cli_main(["embed", model, audio, str(tmp_path / "t.lance"), *common]) == 0
    capsys.readouterr()
    assert _rows(folder).keys() == _rows(tmp_path / "t.lance").keys() == set(FILES)
    for key, row in _rows(folder).items():
        assert row["embedding"] == pytest.approx(_rows(tmp_path / "t.lance")[key]["embedding"], abs=1e-6)
    assert cli_main(["search", str(folder), "--audio", str(work / "audio" / "b.wav"), "--top-k", "1"]) == 0
    assert _table_out(capsys.readouterr().out)[0][2] == "b.wav"
    assert cli_main(["index", "build", str(folder)]) == 0
    assert "left exact" in capsys.readouterr().out
    for outputs in ([], [str(tmp_path / "x.parquet"), "--index", str(folder)]):
        assert cli_main(["embed", model, audio, *outputs, *common]) == 2
        assert "give exactly one output: OUT, or --index DIR" in capsys.readouterr().err


def test_table_and_parquet_give_the_same_exact_results(work, tmp_path):
    lance, parquet = tmp_path / "t.lance", tmp_path / "t.parquet"
    _embed(work / "model", work / "audio", lance, window=True)
    _embed(work / "model", work / "audio", parquet, window=True)
    for query in ({"text": "a dog barks in the rain"}, {"audio": work / "audio" / "b.wav"}):
        for windows in (False, True):
            from_table = clapforge.search(lance, top_k=4, windows=windows, exact=True, **query)
            from_parquet = clapforge.search(parquet, top_k=4, windows=windows, **query)
            assert [r["key"] for r in from_table] == [r["key"] for r in from_parquet]
            assert [r["score"] for r in from_table] == pytest.approx([r["score"] for r in from_parquet], abs=1e-5)
            if windows:
                assert [(r["start"], r["end"]) for r in from_table] == [(r["start"], r["end"]) for r in from_parquet]
