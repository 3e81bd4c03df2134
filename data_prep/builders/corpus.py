"""What every real-corpus builder shares: bad-clip reporting, parallel resumable extraction, report.

A corpus module lists its clips (`ClipSource`: id, split, speaker, label, source files) and gives
a picklable function that turns one clip into an example of the project schema, raising
`BadClip` when the clip cannot be used. `CorpusBuilder` (a TFDS builder) then

1. extracts every clip in a process pool (all cores, a progress bar). Each result, example or
   rejection, is cached as one file, written under a temporary name and renamed, keyed by the
   source files' path, size and modification time: a killed build, rerun, only extracts the
   clips it had not finished, and a half-written cache file is never read;
2. lets TFDS write the records, which it does into an `*.incomplete*` folder renamed at the end,
   so a partial dataset never looks complete;
3. writes `build_report.json` beside the records and logs it: clips written per split, and every
   clip skipped or converted with the file and the reason.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tqdm

from data_prep.errors import BadClip

REPORT_FILE = "build_report.json"


@dataclasses.dataclass(frozen=True)
class ClipSource:
    """One clip as found in the corpus folder.

    Attributes:
      clip_id: corpus-unique id.
      split: the split it belongs to.
      speaker: speaker id.
      label: class name.
      files: role -> path of its source files (e.g. {'audio': ..., 'markers': ...}).
      extra: small corpus-specific values the extractor needs (must be JSON-serialisable).
    """

    clip_id: str
    split: str
    speaker: str
    label: str
    files: Mapping[str, str]
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A clip (or a source line) left out of the records, and why."""

    clip_id: str
    split: str
    file: str
    reason: str


Extractor = Callable[[ClipSource], tuple[dict[str, Any], list[str]]]


def fingerprint(source: ClipSource, version: str) -> str:
    """A key that changes when a source file or the extraction changes."""
    parts = [version, source.clip_id, source.split, source.speaker, source.label]
    for role, path in sorted(source.files.items()):
        try:
            st = os.stat(path)
            parts.append(f"{role}={os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{role}={os.path.abspath(path)}:missing")
    parts.append(json.dumps(source.extra, sort_keys=True, default=str))
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


def _cache_paths(cache_dir: str, source: ClipSource, version: str) -> tuple[str, str]:
    stem = os.path.join(cache_dir, f"{source.clip_id}.{fingerprint(source, version)}")
    return stem + ".npz", stem + ".skip.json"


def _atomic_write(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, mode) as f:
        write(f)
    os.replace(tmp, path)


def _extract_one(extractor: Extractor, source: ClipSource, cache_dir: str, version: str) -> str:
    """Runs in a worker: extracts one clip into the cache. Returns 'ok' or 'skipped'."""
    ok_path, skip_path = _cache_paths(cache_dir, source, version)
    try:
        example, notes = extractor(source)
    except BadClip as e:
        record = {"file": e.path, "reason": e.reason}
        _atomic_write(skip_path, lambda f: json.dump(record, f), mode="w")
        return "skipped"
    arrays = {k: np.asarray(v) for k, v in example.items()}
    arrays["__notes__"] = np.asarray(json.dumps(notes))
    _atomic_write(ok_path, lambda f: np.savez(f, **arrays))
    return "ok"


def load_cached(cache_dir: str, source: ClipSource, version: str) -> dict[str, Any]:
    """The example of `source` from the cache (strings and scalars as Python values)."""
    ok_path, _ = _cache_paths(cache_dir, source, version)
    with np.load(ok_path) as data:
        return {k: (data[k].item() if data[k].ndim == 0 else data[k]) for k in data.files}


@dataclasses.dataclass
class Extraction:
    """What `extract_all` found: usable clips per split, skips, conversion notes, counts."""

    clips: dict[str, list[ClipSource]]
    skipped: list[Skipped]
    notes: list[dict[str, str]]
    reused: int
    extracted: int
    seconds: float


def extract_all(
    sources: Sequence[ClipSource],
    extractor: Extractor,
    cache_dir: str,
    version: str,
    num_workers: int | None = None,
    description: str = "extracting",
) -> Extraction:
    """Extracts every clip not yet in the cache, in parallel, with a progress bar.

    Args:
      sources: the clips to extract.
      extractor: clip -> (example dict, notes); raises `BadClip`. Must be picklable (a
        module-level function), as it runs in worker processes.
      cache_dir: where each clip's result is kept between runs.
      version: extraction version; changing it invalidates the cache.
      num_workers: worker processes (default: all cores; 0 runs in this process).
      description: label of the progress bar.

    Returns:
      An `Extraction`; its clips keep the order of `sources`.
    """
    os.makedirs(cache_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(cache_dir, "*.tmp*")):  # left by a killed build
        os.remove(stale)
    start = time.time()
    todo = [s for s in sources if not any(map(os.path.exists, _cache_paths(cache_dir, s, version)))]
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    with tqdm.tqdm(total=len(todo), desc=description, unit="clip", dynamic_ncols=True) as bar:
        if workers == 0 or len(todo) <= 1:
            for s in todo:
                _extract_one(extractor, s, cache_dir, version)
                bar.update()
        else:
            # 'spawn': workers must not inherit TensorFlow's threads from a fork.
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                futures = [
                    pool.submit(_extract_one, extractor, s, cache_dir, version) for s in todo
                ]
                for future in concurrent.futures.as_completed(futures):
                    future.result()
                    bar.update()
    clips: dict[str, list[ClipSource]] = {}
    skipped, notes = [], []
    for s in sources:
        ok_path, skip_path = _cache_paths(cache_dir, s, version)
        clips.setdefault(s.split, [])
        if os.path.exists(ok_path):
            clips[s.split].append(s)
            with np.load(ok_path) as data:
                notes += [
                    {"clip_id": s.clip_id, "note": n} for n in json.loads(str(data["__notes__"]))
                ]
        else:
            with open(skip_path) as f:
                record = json.load(f)
            skipped.append(Skipped(s.clip_id, s.split, record["file"], record["reason"]))
    return Extraction(
        clips=clips,
        skipped=skipped,
        notes=notes,
        reused=len(sources) - len(todo),
        extracted=len(todo),
        seconds=time.time() - start,
    )


def make_report(
    name: str, extraction: Extraction, listing_skips: Iterable[Skipped]
) -> dict[str, Any]:
    """The build report: counts per split, every skipped clip and conversion note."""
    skipped = list(listing_skips) + extraction.skipped
    splits = sorted(set(extraction.clips) | {s.split for s in skipped if s.split})
    return {
        "dataset": name,
        "splits": {
            sp: {
                "written": len(extraction.clips.get(sp, [])),
                "skipped": sum(s.split == sp for s in skipped),
            }
            for sp in splits
        },
        "written": sum(len(v) for v in extraction.clips.values()),
        "skipped": [dataclasses.asdict(s) for s in skipped],
        "converted": extraction.notes,
        "extracted_now": extraction.extracted,
        "reused_from_cache": extraction.reused,
        "extraction_seconds": round(extraction.seconds, 1),
    }


def format_report(report: Mapping[str, Any], max_lines: int = 50) -> str:
    """Human-readable summary of a build report."""
    lines = [f"{report['dataset']}: {report['written']} clips written"]
    lines.append(f"  {'split':<14}{'written':>8}{'skipped':>9}")
    for split, counts in report["splits"].items():
        lines.append(f"  {split:<14}{counts['written']:>8}{counts['skipped']:>9}")
    skipped = report["skipped"]
    lines.append(f"  {len(skipped)} skipped:")
    for s in skipped[:max_lines]:
        lines.append(f"    {s['clip_id'] or '-'} ({s['split'] or '-'}): {s['file']}: {s['reason']}")
    if len(skipped) > max_lines:
        lines.append(f"    ... {len(skipped) - max_lines} more in {REPORT_FILE}")
    converted = report["converted"]
    if converted:
        lines.append(f"  {len(converted)} conversions (kept), e.g.:")
        for n in converted[:5]:
            lines.append(f"    {n['clip_id']}: {n['note']}")
    lines.append(
        f"  extracted now: {report['extracted_now']}, reused from cache: "
        f"{report['reused_from_cache']} ({report['extraction_seconds']} s)"
    )
    return "\n".join(lines)
