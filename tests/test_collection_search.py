"""``actionclip search``: exact top-k of a brute-force reference, faiss built once, the model the collection records."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import actionclip
from actionclip.cli.main import main
from actionclip.host.files import write_atomically
from actionclip.inference import collection_store as store
from actionclip.inference import search as search_module
from actionclip.prompts import ACTIONCLIP_TEMPLATES, fill_templates
from test_collection_embed import make_videos

QUERY = "someone playing guitar"


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("collection")
    model = actionclip.create_model("test-tiny", seed=0).eval()
    checkpoint = actionclip.save(model, root / "ckpt")
    videos = make_videos(root / "videos", 8)
    actionclip.embed(
        root / "videos", root / "emb", checkpoint=checkpoint, precision="fp32", dtype="fp32", device="cpu", workers=0, shard_size=3
    )
    return model, checkpoint, videos, root / "emb"


def brute_force(matrix: np.ndarray, query: np.ndarray, k: int):
    scores = matrix.astype(np.float64) @ query.astype(np.float64)
    order = np.argsort(-scores, kind="stable")[:k]
    return scores[order], order


def text_query(model, text):
    """The query vector, computed here from the tokens: the 16 templates' normalised embeddings, averaged, normalised."""
    tokens = model.tokenize(fill_templates(ACTIONCLIP_TEMPLATES, [text]))
    return F.normalize(F.normalize(model.encode_text(tokens), dim=-1).mean(dim=0), dim=-1).detach().numpy()


def test_text_search_is_the_exact_top_k_of_a_brute_force_reference(collection, capsys):
    model, _, _, directory = collection
    code = main(["search", str(directory), QUERY, "--top-k", "5", "--json"])  # the model recorded in the collection
    answer = json.loads(capsys.readouterr().out)
    assert code == 0 and answer["query"] == QUERY
    rows, matrix = store.load_embeddings(directory)
    scores, order = brute_force(matrix, text_query(model, QUERY), 5)
    assert [r["video"] for r in answer["results"]] == [rows[i]["video"] for i in order]
    assert [r["score"] for r in answer["results"]] == pytest.approx(scores.tolist(), abs=1e-5)
    assert all(set(r) == {"video", "start", "end", "score"} for r in answer["results"])
    code = main(["search", str(directory), QUERY, "--top-k", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and lines[0] == QUERY and lines[1].split()[:3] == ["1", f"{scores[0]:.4f}", rows[order[0]]["video"]]


def test_exact_search_over_chunks_and_faiss_built_once(tmp_path, monkeypatch):
    """Random rows in three shards, searched a chunk at a time, and with faiss: flat below IVF_FROM rows (exact), an
    inverted-file index above, kept beside the shards until the manifest changes."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    directory = tmp_path / "random"
    directory.mkdir()
    write_atomically(directory / store.INFO, json.dumps({"dim": 32, "dtype": "fp32"}).encode())
    matrix = rng.standard_normal((3000, 32)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    for part in np.split(np.arange(3000), 3):
        name = store.write_shard(directory, 0, matrix[part])
        store.append_manifest(
            directory, [{"video": f"v{i}.mp4", "start": 0.0, "end": 1.0, "shard": name, "row": j} for j, i in enumerate(part)]
        )
    rows, loaded = store.load_embeddings(directory)
    assert np.array_equal(loaded, matrix)
    query = torch.from_numpy(matrix[7] + 0.5 * matrix[11])
    monkeypatch.setattr(search_module, "CHUNK_ROWS", 700)
    expected_scores, expected = brute_force(matrix, query.numpy(), 10)
    scores, order = search_module.exact_top_k(loaded, query, 10)
    assert order == expected.tolist() and scores == pytest.approx(expected_scores.tolist(), abs=1e-5)
    scores, order = search_module.faiss_top_k(search_module.faiss_index(directory, rows, loaded), query, 10)
    assert order == expected.tolist() and json.loads((directory / store.INDEX_INFO).read_text())["kind"] == "flat"

    monkeypatch.setattr(search_module, "IVF_FROM", 1000)
    (directory / store.INDEX_INFO).write_text('{"rows_key": "stale"}')
    index = search_module.faiss_index(directory, rows, loaded)
    assert json.loads((directory / store.INDEX_INFO).read_text())["kind"] == "ivf" and index.nlist == 54
    scores, order = search_module.faiss_top_k(index, query, 10, nprobe=54)  # every list visited: exact
    assert order == expected.tolist()
    built = (directory / store.INDEX).stat().st_mtime_ns
    search_module.faiss_index(directory, rows, loaded)
    assert (directory / store.INDEX).stat().st_mtime_ns == built  # read, not built again
    name = store.write_shard(directory, 0, matrix[:1])
    store.append_manifest(directory, [{"video": "new.mp4", "start": 0.0, "end": 1.0, "shard": name, "row": 0}])
    rows, loaded = store.load_embeddings(directory)
    assert search_module.faiss_index(directory, rows, loaded).ntotal == 3001


def test_faiss_search_from_the_command_line_equals_exact(collection, capsys):
    pytest.importorskip("faiss")
    _, _, _, directory = collection
    main(["search", str(directory), QUERY, "--json", "--top-k", "8"])
    exact = json.loads(capsys.readouterr().out)
    assert main(["search", str(directory), QUERY, "--json", "--top-k", "8", "--index", "faiss"]) == 0
    approximate = json.loads(capsys.readouterr().out)
    assert [r["video"] for r in approximate["results"]] == [r["video"] for r in exact["results"]]
    assert (directory / store.INDEX).is_file()


def test_search_like_a_video_ranks_that_video_first(collection):
    _, checkpoint, videos, directory = collection
    answer = actionclip.search(directory, like=videos[3], top_k=3, checkpoint=checkpoint)
    assert answer["query"] == str(videos[3]) and answer["results"][0]["video"] == str(videos[3])
    assert answer["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_another_model_is_refused_with_one_line(collection, tmp_path, capsys):
    _, _, _, directory = collection
    other = actionclip.save(actionclip.create_model("test-tiny", seed=1), tmp_path / "other")
    code = main(["search", str(directory), QUERY, "--checkpoint", str(other)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"error: {directory}: embedded with another model than this one (its text encoder differs)"]
    code = main(["search", str(tmp_path), QUERY])
    assert code == 2 and capsys.readouterr().err.startswith(f"error: {tmp_path}: not an embedded collection")
