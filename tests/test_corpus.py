"""Corpus reader: token counts on the real data, MD5 checks, offline errors, batching."""
import io
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA
from repro.data import DataError
from repro.tasks.corpus import CORPORA, batchify, load_corpus, resolve_data_dir, shard_stream


def _data_dir(name: str) -> Path:
    d = SHARED_DATA / name
    # The real data must be there (CI has ../shared beside the clone, or sets REPRO_SHARED_DATA): a skip
    # would hide a broken setup.
    assert d.is_dir(), f"{d} is missing: the shared offline copy of {name} must sit beside the repository"
    return d


@pytest.mark.parametrize("name, counts, vocab", [
    ("ptb", (929_589, 73_760, 82_430), 10_000),
    ("wikitext-2", (2_088_628, 217_646, 245_569), 33_278),
])
@pytest.mark.data
def test_real_corpus_counts(name, counts, vocab):
    c = load_corpus(name, str(_data_dir(name)))
    assert (c.train.numel(), c.valid.numel(), c.test.numel()) == counts
    assert len(c.dictionary) == vocab
    assert c.train.dtype == torch.long and c.train.dim() == 1
    assert all(c.dictionary.word2idx[w] == i for i, w in enumerate(c.dictionary.idx2word))
    assert int(c.test.max()) < vocab


def test_md5_mismatch_names_file(tmp_path):
    spec = CORPORA["ptb"]
    for fn in spec.files.values():
        (tmp_path / fn).write_text("not the real file\n")
    with pytest.raises(DataError) as e:
        resolve_data_dir(spec, str(tmp_path))
    msg = str(e.value)
    assert "ptb.train.txt" in msg and "f26c4b92c5fdc7b3f8c7cdcb991d8420" in msg and "\n" not in msg


def test_missing_files_offline(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    missing = tmp_path / "nowhere" / "ptb"
    with pytest.raises(DataError) as e:
        resolve_data_dir(CORPORA["ptb"], str(missing))
    msg = str(e.value)
    assert "\n" not in msg and str(missing) in msg
    assert "ptb.train.txt, ptb.valid.txt, ptb.test.txt" in msg and "REPRO_PTB_DIR" in msg


@pytest.mark.parametrize("name", ["ptb", "wikitext-2"])
@pytest.mark.data
def test_download_into_empty_dir(name, tmp_path, monkeypatch):
    spec, src = CORPORA[name], _data_dir(name)
    if spec.archive_member_prefix is None:
        payload = {spec.url.format(split=s): (src / fn).read_bytes() for s, fn in spec.files.items()}
    else:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for fn in spec.files.values():
                z.writestr(spec.archive_member_prefix + fn, (src / fn).read_bytes())
        payload = {spec.url: buf.getvalue()}
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(payload[url]))
    target = tmp_path / "cache"
    assert resolve_data_dir(spec, str(target)) == target
    assert sorted(p.name for p in target.iterdir()) == sorted(spec.files.values())


@pytest.mark.data
def test_env_var_and_unknown_name(monkeypatch):
    monkeypatch.setenv("REPRO_PTB_DIR", str(_data_dir("ptb")))
    assert resolve_data_dir(CORPORA["ptb"], None) == _data_dir("ptb")
    with pytest.raises(DataError, match="unknown corpus"):
        load_corpus("nope", None)


def test_batchify_and_shards():
    data = torch.arange(23)
    b = batchify(data, 4)
    assert b.shape == (5, 4) and b.is_contiguous()
    assert torch.equal(b[:, 1], torch.arange(5, 10))  # each column is one contiguous segment
    shards = shard_stream(data, 3)
    assert [s.tolist() for s in shards] == [list(range(0, 7)), list(range(7, 14)), list(range(14, 21))]


def test_tokenized_corpus_is_cached_by_content(tmp_path, monkeypatch):
    """The second load reads the cache (same ids, same dictionary); a changed file is tokenized again."""
    from repro.tasks import corpus as corpus_module

    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    spec = CORPORA["text"]
    data = tmp_path / "data"
    data.mkdir()
    for split, words in (("train", "a b c\nb c d"), ("valid", "c d e"), ("test", "e f")):
        (data / spec.files[split]).write_text(words + "\n")
    first = corpus_module.Corpus(data, spec)
    (cached,) = (tmp_path / "cache" / "tokenized").glob("text-*.pt")
    calls = []
    monkeypatch.setattr(corpus_module.Corpus, "_tokenize", lambda self, path: calls.append(path))
    second = corpus_module.Corpus(data, spec)
    assert calls == []  # nothing tokenized: read from the cache
    assert second.dictionary.idx2word == first.dictionary.idx2word
    assert all(torch.equal(getattr(second, s), getattr(first, s)) for s in ("train", "valid", "test"))
    monkeypatch.undo()
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    (data / spec.files["test"]).write_text("e f g\n")
    third = corpus_module.Corpus(data, spec)
    assert third.test.numel() == 4 and "g" in third.dictionary.word2idx
    assert len(list((tmp_path / "cache" / "tokenized").glob("text-*.pt"))) == 2
    cached.write_bytes(b"damaged")  # a damaged entry is rebuilt, never trusted
    (data / spec.files["test"]).write_text("e f\n")
    assert torch.equal(corpus_module.Corpus(data, spec).test, first.test)
