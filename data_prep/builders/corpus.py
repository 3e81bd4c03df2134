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
from fbp_jax.io import atomic_write, is_disk_full

REPORT_FILE = "build_report.json"
# Part of every cache key: bumped when the checks of extracted clips change, so that clips
# cached (accepted or skipped) under older checks are extracted again.
CHECKS_VERSION = 2


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


@dataclasses.dataclass
class Seen:
    """What a listing read besides the clips' own files, and what it noticed on the way.

    A builder's listing records the side files it reads (`read`: label files, feature CSVs)
    and finds folders through `entry`, which accepts a name that differs only in case (as the
    corpus's tools do on case-insensitive file systems) and notes it. Everything under the
    manual dir that no clip, skip or `read` names is reported as not used (`unused_entries`).
    """

    read: set[str] = dataclasses.field(default_factory=set)
    notes: list[str] = dataclasses.field(default_factory=list)
    ignored: dict[str, int] = dataclasses.field(default_factory=dict)

    def file(self, path: str) -> str:
        self.read.add(os.path.abspath(path))
        return path

    def ignore(self, path: str, reason: str) -> None:
        """A file or folder the builder leaves out by design (counted per reason in the
        report, not listed one by one)."""
        self.read.add(os.path.abspath(path))
        self.ignored[reason] = self.ignored.get(reason, 0) + 1

    def entry(self, parent: str, name: str) -> str | None:
        """`parent/name`, or the entry of `parent` whose name equals `name` but for case
        (noted); None when there is neither."""
        exact = os.path.join(parent, name)
        if os.path.exists(exact):
            return exact
        if not os.path.isdir(parent):
            return None
        same = [e for e in sorted(os.listdir(parent)) if e.lower() == name.lower()]
        if not same:
            return None
        path = os.path.join(parent, same[0])
        self.notes.append(f"{path}: read as {name!r} (the name differs only in case)")
        return path

    def path(self, root: str, *parts: str) -> str | None:
        """`root/part1/part2/...`, each part found by `entry`."""
        for part in parts:
            found = self.entry(root, part)
            if found is None:
                return None
            root = found
        return root


# Unused files of one folder with the same extension beyond this many are reported as one line.
UNUSED_PER_KIND = 3


def unused_entries(
    manual_dir: str, used: Iterable[str], expected: str, reported_ids: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """What `manual_dir` holds that the build did not read: folders with nothing read inside
    (one entry each, with their file count) and files beside files that were read (several of
    one folder and extension collapsed into one entry).

    Args:
      manual_dir: the corpus folder.
      used: paths the build read (clip files, skipped files, side files); a folder among them
        counts as read whole.
      expected: the layout the builder looks for, put in each entry.
      reported_ids: clip ids the report names as skipped: files named after them (any
        extension) are accounted for.

    Returns:
      [{'path', 'kind' ('folder' | 'file' | 'files'), 'count', 'expected'}].
    """
    root = os.path.abspath(manual_dir)
    used = {os.path.abspath(p) for p in used}
    reported_ids = set(reported_ids)
    needed = set()
    for p in used:
        while p.startswith(root) and p not in needed:
            needed.add(p)
            p = os.path.dirname(p)
    out = []
    for folder, dirs, files in os.walk(root):
        for d in sorted(dirs):
            path = os.path.join(folder, d)
            if path not in needed:
                count = sum(len(f) for _, _, f in os.walk(path))
                out.append({"path": path, "kind": "folder", "count": count, "expected": expected})
        # A folder in `used` was read (or left out) whole.
        dirs[:] = sorted(d for d in dirs if os.path.join(folder, d) in needed - used)
        by_kind: dict[str, list[str]] = {}
        for f in sorted(files):
            path = os.path.join(folder, f)
            if path not in used and os.path.splitext(f)[0] not in reported_ids:
                by_kind.setdefault(os.path.splitext(f)[1].lower(), []).append(path)
        for ext, paths in by_kind.items():
            if len(paths) > UNUSED_PER_KIND:
                out.append(
                    {
                        "path": os.path.join(folder, f"*{ext}"),
                        "kind": "files",
                        "count": len(paths),
                        "expected": expected,
                    }
                )
            else:
                out += [
                    {"path": p, "kind": "file", "count": 1, "expected": expected} for p in paths
                ]
    return out


def format_unused(entry: Mapping[str, Any]) -> str:
    what = {
        "folder": f"folder of {entry['count']} files, nothing read",
        "files": f"{entry['count']} files not read",
        "file": "not read",
    }[entry["kind"]]
    return f"{entry['path']}: {what} (expected: {entry['expected']})"


Extractor = Callable[[ClipSource], tuple[dict[str, Any], list[str]]]
UNEXPECTED = "unexpected error"  # Prefix of the reason of a skip no check foresaw.


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


def _main_file(source: ClipSource) -> str:
    files = dict(source.files)
    for role in ("audio", "video"):
        if role in files:
            return files[role]
    return next(iter(files.values()), source.clip_id)


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
    """What a written example must be: the feature shapes of the dataset and plausible ranges.

    Attributes:
      num_bins: spectrogram bins.
      video_shape: per-frame video feature shape (None entries: any size).
      max_log_power: the largest natural-log power a bin of full-scale audio can reach
        (640 samples of amplitude 1 under a Hamming window: about 11.7), with margin.
      min_log_power: the floor of the spectrogram (log of 1e-10).
      max_video_abs: the largest magnitude a video feature may have.
    """

    num_bins: int
    video_shape: tuple[int | None, ...]
    max_log_power: float = 14.0
    min_log_power: float = -23.1
    max_video_abs: float = 1e4


def validate_example(example: dict[str, Any], spec: ExampleSpec, path: str) -> None:
    """Checks the content of an example before it is cached for writing.

    Raises:
      BadClip: a stream is empty, has the wrong shape, is not finite or out of range, or the
        streams disagree on the number of frames; the message says which and how.
    """
    audio = np.asarray(example["audio"])
    video = np.asarray(example["video"])
    valid = np.asarray(example["video_valid"])
    if audio.ndim != 2 or audio.shape[1] != spec.num_bins or not len(audio):
        raise BadClip(
            path, f"spectrogram of shape {audio.shape}, expected [frames, {spec.num_bins}]"
        )
    if video.ndim != 1 + len(spec.video_shape) or not len(video):
        raise BadClip(
            path, f"video features of shape {video.shape}, expected [frames, *{spec.video_shape}]"
        )
    for got, want in zip(video.shape[1:], spec.video_shape):
        if want is not None and got != want:
            raise BadClip(
                path,
                f"video features of shape {video.shape[1:]} per frame, expected {spec.video_shape}",
            )
    if valid.shape != video.shape[:1]:
        raise BadClip(path, f"{len(valid)} validity flags for {len(video)} video frames")
    for name, x in (("spectrogram", audio), ("video features", video)):
        if not np.all(np.isfinite(x)):
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
            raise BadClip(path, f"{name} has {bad} non-finite values")
    lo, hi = float(audio.min()), float(audio.max())
    if hi > spec.max_log_power or lo < spec.min_log_power - 1e-3:
        raise BadClip(
            path,
            f"spectrogram log power in [{lo:.1f}, {hi:.1f}], outside what full-scale audio gives "
            f"([{spec.min_log_power:.1f}, {spec.max_log_power:.1f}])",
        )
    peak = float(np.abs(video).max())
    if peak > spec.max_video_abs:
        raise BadClip(path, f"video feature magnitude {peak:.3g} > {spec.max_video_abs:g}")
    duration = float(example.get("duration_s", 0.0))
    if not np.isfinite(duration) or duration <= 0:
        raise BadClip(path, f"duration {duration} s")


def checked(
    extractor: Extractor, spec: ExampleSpec | None, source: ClipSource
) -> tuple[dict[str, Any], list[str]]:
    """`extractor(source)`, then `validate_example` (picklable through functools.partial)."""
    example, notes = extractor(source)
    if spec is not None:
        validate_example(example, spec, _main_file(source))
    return example, notes


def _extract_one(extractor: Extractor, source: ClipSource, cache_dir: str, version: str) -> str:
    """Runs in a worker: extracts one clip into the cache. Returns 'ok' or 'skipped'.

    Nothing a clip raises escapes: `BadClip` is a foreseen rejection; any other exception is
    recorded as an unexpected error with its type and message (and counted in the report, so
    that it gets a proper check).
    """
    ok_path, skip_path = _cache_paths(cache_dir, source, version)
    try:
        example, notes = extractor(source)
        arrays = {k: np.asarray(v) for k, v in example.items()}
        arrays["__notes__"] = np.asarray(json.dumps(notes))
    except BadClip as e:
        return _record_skip(skip_path, e.path, e.reason)
    except Exception as e:  # one clip never stops a build; a full disk stops every clip
        if is_disk_full(e):
            raise
        message = " ".join(str(e).split())[:500]
        reason = f"{UNEXPECTED} {type(e).__name__}: {message}"
        return _record_skip(skip_path, _main_file(source), reason, unexpected=True)
    atomic_write(ok_path, lambda f: np.savez(f, **arrays), mode="wb")
    return "ok"


def _record_skip(skip_path: str, path: str, reason: str, unexpected: bool = False) -> str:
    record = {"file": path, "reason": reason, "unexpected": unexpected}
    atomic_write(skip_path, lambda f: json.dump(record, f))
    return "skipped"


def check_listing(
    sources: Sequence[ClipSource], same_content: Callable[[list[str]], bool] | None = None
) -> tuple[list[ClipSource], list[Skipped]]:
    """Checks that span clips, before any extraction: one source per clip id.

    Clips whose id appears more than once (e.g. the same clip as .wav and .flac) are all
    skipped with a reason naming every file involved, unless all their files are
    byte-identical copies with the same label, split and speaker, of which the first is kept
    and the others reported.

    Returns:
      (the sources to extract, the skipped ones).
    """
    same_content = same_content or _identical_files
    by_id: dict[str, list[ClipSource]] = {}
    for s in sources:
        by_id.setdefault(s.clip_id, []).append(s)
    kept, skipped = [], []
    for s in sources:
        group = by_id[s.clip_id]
        if len(group) == 1:
            kept.append(s)
            continue
        if s is not group[0]:
            continue
        roles = sorted({r for g in group for r in g.files})
        differing = [r for r in roles if not same_content([g.files.get(r, "") for g in group])]
        described = {
            f: sorted({getattr(g, f) for g in group}) for f in ("label", "split", "speaker")
        }
        conflicts = [f"{f}s {', '.join(v)}" for f, v in described.items() if len(v) > 1]
        if conflicts and not differing:
            for g in group:
                skipped.append(
                    Skipped(
                        g.clip_id,
                        g.split,
                        _main_file(g),
                        f"clip id {g.clip_id} is given by identical files "
                        f"({', '.join(_main_file(x) for x in group)}) with different "
                        f"{'; '.join(conflicts)}: which is right is unknown, so none is written",
                    )
                )
            continue
        if not differing:
            kept.append(group[0])
            skipped += [
                Skipped(
                    g.clip_id,
                    g.split,
                    _main_file(g),
                    f"duplicate of {_main_file(group[0])} (identical files); that one is kept",
                )
                for g in group[1:]
            ]
            continue
        files = sorted({g.files[r] for g in group for r in differing if r in g.files})
        for g in group:
            mine = [g.files[r] for r in differing if r in g.files]
            skipped.append(
                Skipped(
                    g.clip_id,
                    g.split,
                    mine[0] if mine else _main_file(g),
                    f"clip id {g.clip_id} is given by {len(files)} different files "
                    f"({', '.join(files)}): which is right is unknown, so none is written",
                )
            )
    return kept, skipped


def _identical_files(paths: list[str]) -> bool:
    try:
        sizes = {os.path.getsize(p) for p in paths}
        if len(sizes) != 1:
            return False
        digests = set()
        for p in paths:
            with open(p, "rb") as f:
                digests.add(hashlib.sha256(f.read()).hexdigest())
        return len(digests) == 1
    except OSError:
        return False


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
    unexpected: int = 0


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
    start = time.time()
    todo = pending(sources, cache_dir, version)
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    with tqdm.tqdm(total=len(todo), desc=description, unit="clip", dynamic_ncols=True) as bar:
        if workers == 0 or len(todo) <= 1:
            for s in todo:
                _extract_one(extractor, s, cache_dir, version)
                bar.update()
        else:
            _extract_in_pool(todo, extractor, cache_dir, version, workers, bar)
    return collect(sources, cache_dir, version, len(todo), time.time() - start)


def pending(sources: Sequence[ClipSource], cache_dir: str, version: str) -> list[ClipSource]:
    """The clips without a cached result (after removing what a killed build left half-done)."""
    os.makedirs(cache_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(cache_dir, "*.tmp*")):
        os.remove(stale)
    return [s for s in sources if not any(map(os.path.exists, _cache_paths(cache_dir, s, version)))]


def extract_cached(
    extractor: Extractor, cache_dir: str, version: str, source: ClipSource
) -> dict[str, Any] | None:
    """Extracts `source` unless its result is cached; the example to write, or None when the
    clip is skipped. What a Beam worker runs for each clip (see `base.CorpusBuilder`)."""
    ok_path, skip_path = _cache_paths(cache_dir, source, version)
    if not (os.path.exists(ok_path) or os.path.exists(skip_path)):
        _extract_one(extractor, source, cache_dir, version)
    return load_cached(cache_dir, source, version) if os.path.exists(ok_path) else None


def collect(
    sources: Sequence[ClipSource],
    cache_dir: str,
    version: str,
    extracted: int = 0,
    seconds: float = 0.0,
) -> Extraction:
    """What the cache holds for `sources`: usable clips per split, skips, notes, counts."""
    clips: dict[str, list[ClipSource]] = {}
    skipped, notes, unexpected = [], [], 0
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
            unexpected += bool(record.get("unexpected"))
    return Extraction(
        clips=clips,
        skipped=skipped,
        notes=notes,
        reused=len(sources) - extracted,
        extracted=extracted,
        seconds=seconds,
        unexpected=unexpected,
    )


def _extract_in_pool(todo, extractor, cache_dir, version, workers, bar) -> None:
    """Extracts `todo` in a process pool; survives workers that die.

    A worker killed by its clip (a decoder crash, the out-of-memory killer) breaks the whole
    pool. The clips that were not finished then run again, one process each, so that the
    clip that kills its process is found, recorded as skipped, and nothing else is lost.
    """
    # 'spawn': workers must not inherit TensorFlow's threads from a fork.
    ctx = multiprocessing.get_context("spawn")
    try:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = [pool.submit(_extract_one, extractor, s, cache_dir, version) for s in todo]
            for future in concurrent.futures.as_completed(futures):
                future.result()
                bar.update()
        return
    except concurrent.futures.process.BrokenProcessPool:
        pass
    left = [s for s in todo if not any(map(os.path.exists, _cache_paths(cache_dir, s, version)))]
    for s in left:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            try:
                pool.submit(_extract_one, extractor, s, cache_dir, version).result()
            except concurrent.futures.process.BrokenProcessPool:
                _, skip_path = _cache_paths(cache_dir, s, version)
                _record_skip(
                    skip_path,
                    _main_file(s),
                    f"{UNEXPECTED}: the extraction process died on this clip (a crash of a "
                    "decoder or library, or the out-of-memory killer)",
                    unexpected=True,
                )
        bar.update()


def media_seconds(path: str) -> float:
    """A media file's duration from its header (0 when it cannot be read)."""
    try:
        import soundfile

        return float(soundfile.info(path).duration)
    except Exception:
        pass
    try:
        import av

        with av.open(path) as container:
            return float(container.duration or 0) / 1e6
    except Exception:
        return 0.0


def estimate_bytes(
    sources: Sequence[ClipSource], spec: ExampleSpec, pending: Sequence[ClipSource]
) -> int:
    """Disk space a build still needs: the extraction cache of the `pending` clips and the
    records of all `sources` (float32 spectrogram frames at 100/s and video features at
    25/s), from the durations in the media files' headers, with a 20 % margin."""
    video = int(np.prod([d or 1 for d in spec.video_shape]))
    per_second = 4 * (spec.num_bins * 100 + (video + 1) * 25)

    def seconds(clips):
        return sum(media_seconds(_main_file(s)) for s in clips)

    return int(1.2 * per_second * (seconds(sources) + seconds(pending))) + 2**20


def make_report(
    name: str,
    extraction: Extraction,
    listing_skips: Iterable[Skipped],
    listing_notes: Sequence[str] = (),
    not_used: Sequence[Mapping[str, Any]] = (),
    ignored: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The build report: counts per split, every skipped clip and conversion note, what the
    listing noticed (names read despite their case) and what the manual dir holds unread."""
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
        "unexpected_errors": extraction.unexpected,
        "converted": extraction.notes,
        "listing_notes": list(listing_notes),
        "not_used": [dict(e) for e in not_used],
        "ignored_by_design": dict(ignored or {}),
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
    unexpected = report.get("unexpected_errors", 0)
    if unexpected:
        lines.append(
            f"  {unexpected} of the skips are unexpected errors (reasons starting "
            f"'{UNEXPECTED}'): no check foresaw them; please report them"
        )
    for note in report.get("listing_notes", []):
        lines.append(f"  note: {note}")
    for reason, count in report.get("ignored_by_design", {}).items():
        lines.append(f"  left out by design: {count} x {reason}")
    not_used = report.get("not_used", [])
    if not_used:
        lines.append(f"  {len(not_used)} entries of the corpus folder not read:")
        lines += [f"    {format_unused(e)}" for e in not_used[:max_lines]]
        if len(not_used) > max_lines:
            lines.append(f"    ... {len(not_used) - max_lines} more in {REPORT_FILE}")
    converted = report["converted"]
    if converted:
        lines.append(f"  {len(converted)} conversions and notes (kept), e.g.:")
        for n in converted[:5]:
            lines.append(f"    {n['clip_id']}: {n['note']}")
    lines.append(
        f"  extracted now: {report['extracted_now']}, reused from cache: "
        f"{report['reused_from_cache']} ({report['extraction_seconds']} s)"
    )
    return "\n".join(lines)
