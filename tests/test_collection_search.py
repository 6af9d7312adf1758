"""``actionclip search``: exact top-k of a brute-force reference, faiss built once, the model the collection records."""

import json
import shutil

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
from conftest import assert_one_line_error
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


def fake_info(**settings) -> dict:
    """A collection.json as embed writes it, for rows written here."""
    info = {"format": 1, "source": None, "arch": "actionclip", "precision": "fp32", "weights": "", "text_weights": "", "frames": 8}
    return {**info, "window": None, "stride": None, "dtype": "fp32", "dim": 64, "decode_short_side": None, **settings}


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
    inverted-file index above, kept beside the shards until the vectors change."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    directory = tmp_path / "random"
    directory.mkdir()
    write_atomically(directory / store.INFO, json.dumps(fake_info(dim=32, dtype="fp32")).encode())
    matrix = rng.standard_normal((3000, 32)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    for part in np.split(np.arange(3000), 3):
        name = store.write_shard(directory, 0, matrix[part])
        store.append_manifest(
            directory,
            [{"video": f"v{i}.mp4", "duration": 1.0, "start": 0.0, "end": 1.0, "shard": name, "row": j} for j, i in enumerate(part)],
        )
    _, loaded = store.load_embeddings(directory)
    assert np.array_equal(loaded, matrix)
    query = torch.from_numpy(matrix[7] + 0.5 * matrix[11])
    monkeypatch.setattr(search_module, "CHUNK_ROWS", 700)
    expected_scores, expected = brute_force(matrix, query.numpy(), 10)
    scores, order = search_module.exact_top_k(loaded, query, 10)
    assert order == expected.tolist() and scores == pytest.approx(expected_scores.tolist(), abs=1e-5)
    scores, order = search_module.faiss_top_k(search_module.faiss_index(directory, loaded), query, 10)
    assert order == expected.tolist() and json.loads((directory / store.INDEX_INFO).read_text())["kind"] == "flat"

    monkeypatch.setattr(search_module, "IVF_FROM", 1000)
    (directory / store.INDEX_INFO).write_text('{"rows_key": "stale"}')
    index = search_module.faiss_index(directory, loaded)
    assert json.loads((directory / store.INDEX_INFO).read_text())["kind"] == "ivf" and index.nlist == 54
    scores, order = search_module.faiss_top_k(index, query, 10, nprobe=54)  # every list visited: exact
    assert order == expected.tolist()
    built = (directory / store.INDEX).stat().st_mtime_ns
    search_module.faiss_index(directory, loaded)
    assert (directory / store.INDEX).stat().st_mtime_ns == built  # read, not built again
    name = store.write_shard(directory, 0, matrix[:1])
    store.append_manifest(directory, [{"video": "new.mp4", "duration": 1.0, "start": 0.0, "end": 1.0, "shard": name, "row": 0}])
    _, loaded = store.load_embeddings(directory)
    assert search_module.faiss_index(directory, loaded).ntotal == 3001


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


def test_faiss_never_reuses_an_index_built_for_other_vectors(collection, tmp_path):
    """The index's key was the rows' shard:row pairs: a collection made again under the same shard names got the old
    index, and old vectors were reported under the new names."""
    pytest.importorskip("faiss")
    directory = shutil.copytree(collection[3], tmp_path / "emb")
    actionclip.search(directory, QUERY, index="faiss")
    for shard in directory.glob("shard-*.npy"):  # other vectors at the same shard:row places
        np.save(shard, np.load(shard)[::-1].copy())
    exact = actionclip.search(directory, QUERY, top_k=8)["results"]
    approximate = actionclip.search(directory, QUERY, top_k=8, index="faiss")["results"]
    assert [r["video"] for r in approximate] == [r["video"] for r in exact]
    assert [r["score"] for r in approximate] == pytest.approx([r["score"] for r in exact], abs=1e-5)


def test_an_empty_query_is_one_line(collection, capsys):
    for args in ([""], ["  "], ["--like", ""]):
        code = main(["search", str(collection[3]), *args])
        out, err = capsys.readouterr()
        assert (code, out, err.splitlines()) == (2, "", ["error: the query is empty: give a text to search for, or a video with --like"])


def _edit_record(number: int, **changes):
    def edit(directory):
        lines = (directory / store.MANIFEST).read_text().splitlines()
        record = {**json.loads(lines[number]), **changes}
        lines[number] = json.dumps({key: value for key, value in record.items() if value != "-"})
        (directory / store.MANIFEST).write_text("\n".join(lines) + "\n")

    return edit


def _edit_info(**changes):
    def edit(directory):
        info = {**json.loads((directory / store.INFO).read_text()), **changes}
        (directory / store.INFO).write_text(json.dumps({key: value for key, value in info.items() if value != "-"}))

    return edit


def _truncate(directory):
    shard = directory / "shard-r000-00000.npy"
    shard.write_bytes(shard.read_bytes()[:-100])


FIRST_SHARD = "shard-r000-00000.npy"
HOSTILE_COLLECTIONS = {
    "a shard outside the folder": (
        _edit_record(0, shard=f"../emb1/{FIRST_SHARD}"),
        f'{store.MANIFEST}: line 1: shard: must be a shard\'s file name in the folder, shard-r<rank>-<n>.npy, got "../emb1/{FIRST_SHARD}"',
    ),
    "a record without row": (_edit_record(0, row="-"), f"{store.MANIFEST}: line 1: row: missing"),
    "a null shard": (_edit_record(1, shard=None), f"{store.MANIFEST}: line 2: shard: must be a shard's file name in the folder"),
    "a list for a video": (lambda d: (d / store.MANIFEST).write_text('{"video": ["x"]}\n'), 'line 1: video: must be a string, got ["x"]'),
    "no dtype": (_edit_info(dtype="-"), f"{store.INFO}: dtype: missing"),
    "a dim of 10.9 TiB": (_edit_info(dim=99999999999), f"{store.INFO}: dim: must be an integer from 1 to 65536, got 99999999999"),
    "a truncated shard": (_truncate, f"{FIRST_SHARD}: truncated or not as actionclip writes it (a float32 array (3, 64))"),
    "a missing shard": (lambda d: (d / FIRST_SHARD).unlink(), f"{FIRST_SHARD}: missing"),
    "a shard of another width": (
        lambda d: np.save(d / FIRST_SHARD, np.zeros((3, 7), np.float32)),
        f"{FIRST_SHARD}: holds float32 (3, 7), not float32 [Nx64]",
    ),
}


@pytest.mark.parametrize("case", HOSTILE_COLLECTIONS)
def test_a_collection_edited_by_hand_is_one_line_and_never_read_outside_its_folder(case, collection, tmp_path, capsys):
    edit, message = HOSTILE_COLLECTIONS[case]
    shutil.copytree(collection[3], tmp_path / "emb1")
    directory = shutil.copytree(collection[3], tmp_path / "emb")
    edit(directory)
    code = main(["search", str(directory), QUERY])
    out, err = capsys.readouterr()
    assert_one_line_error(code, out, err, message)
