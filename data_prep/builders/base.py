"""`CorpusBuilder`: the TFDS builder every real corpus derives from (see `data_prep.builders.corpus`).

A subclass gives its features (`schema_features`), `list_clips(manual_dir)` and a picklable
`extractor`; this class extracts in parallel into a cache, writes the records through TFDS and
the build report beside them.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from data_prep.builders import corpus
from fbp_jax import io

_BYTES = tfds.features.Encoding.BYTES


def schema_features(
    class_names: Sequence[str], video_shape: Sequence[int], video_doc: str, num_bins: int = 200
) -> tfds.features.FeaturesDict:
    """The project's example schema, the same for every corpus.

    clip_id (corpus-unique), speaker (for speaker-independent folds), label, audio [frames,
    num_bins] log-power spectrogram at 100 frames/s, video [frames, *video_shape] at 25 frames/s,
    video_valid [frames] (a usable face / markers), duration_s.
    """
    return tfds.features.FeaturesDict(
        {
            "clip_id": tfds.features.Text(doc="Corpus-unique clip id."),
            "speaker": tfds.features.Text(doc="Speaker id."),
            "label": tfds.features.ClassLabel(names=list(class_names)),
            "audio": tfds.features.Tensor(
                shape=(None, num_bins),
                dtype=np.float32,
                encoding=_BYTES,
                doc="Log-power spectrogram, 100 frames/s (data_prep.features.audio).",
            ),
            "video": tfds.features.Tensor(
                shape=(None, *video_shape), dtype=np.float32, encoding=_BYTES, doc=video_doc
            ),
            "video_valid": tfds.features.Tensor(
                shape=(None,),
                dtype=np.bool_,
                encoding=_BYTES,
                doc="False where the frame has no usable face / markers.",
            ),
            "duration_s": tfds.features.Scalar(dtype=np.float32, doc="Seconds."),
        }
    )


RERUN = (
    "Free space (or give another --data_dir) and run the same command again: the clips "
    "already extracted are reused."
)


class CorpusBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the real-corpus builders: parallel cached extraction, TFDS records, report.

    Subclasses define `_info`, `list_clips` and `extractor`, and bump `EXTRACTION_VERSION`
    when the extraction changes. `num_workers` (set by `data_prep.build`) picks the number of
    extraction processes (None: all cores).
    """

    # 2: a mains hum and a DC offset above -60 dBFS removed before the spectrogram.
    # 3: a hum notched at the harmonics of its measured fundamental, only within 45 dB of the
    #    loudest frame (a grid off 50 / 60 Hz; a codec's frame comb is not a hum).
    # 4: a hum's fundamental searched within 3 Hz of 50 / 60 Hz (a generator's).
    EXTRACTION_VERSION: ClassVar[str] = "4"
    # Keys of a cached example that are for the report, not the records.
    INTERNAL_KEYS: ClassVar[tuple[str, ...]] = ("__notes__",)
    num_workers: int | None = None
    # What to do with a clip whose streams' durations disagree (data_prep.features.sync).
    duration_mismatch: str = "keep"
    # Set (by `data_prep.build --beam_runner`) to extract inside TFDS's Apache Beam pipeline.
    use_beam: bool = False

    # Nothing to download, so no checksums file to look up (tensorflow/datasets#11212).
    @tfds.core.utils.classproperty
    @classmethod
    def url_infos(cls) -> None:
        return None

    # The layout the builder reads, for the report's list of what it did not read.
    LAYOUT: ClassVar[str] = "the corpus's own layout (see the builder's documentation)"

    def list_clips(self, manual_dir: str) -> tuple[list[corpus.ClipSource], list[corpus.Skipped]]:
        """Finds the clips under `manual_dir`: usable sources, and entries skipped on sight.

        Side files it reads and names found despite their case go into `self.seen`
        (`corpus.Seen`), so the report can list what the folder holds that was not read.
        """
        raise NotImplementedError

    @property
    def seen(self) -> corpus.Seen:
        if getattr(self, "_seen", None) is None:
            self._seen = corpus.Seen()
        return self._seen

    def extractor(self) -> corpus.Extractor:
        """A picklable clip -> (example, notes) function (e.g. a functools.partial)."""
        raise NotImplementedError

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        self._seen = corpus.Seen()
        sources, listing_skips = self.list_clips(manual_dir)
        used = [f for s in sources for f in s.files.values()]
        used += [s.file for s in listing_skips] + sorted(self.seen.read)
        reported = [s.clip_id for s in listing_skips if s.clip_id]
        not_used = corpus.unused_entries(manual_dir, used, self.LAYOUT, reported)
        sources, duplicates = corpus.check_listing(sources)
        listing_skips = list(listing_skips) + duplicates
        if not sources and not listing_skips:
            found = "".join(f"\n  {corpus.format_unused(e)}" for e in not_used[:10])
            raise FileNotFoundError(
                f"No clips of {self.name} found under {manual_dir}"
                + (f"; it holds, unread:{found}" if found else " (it is empty)")
                + f"\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        version = f"{self.builder_config.name}-{self.EXTRACTION_VERSION}-c{corpus.CHECKS_VERSION}"
        cache_dir = os.path.join(
            os.fspath(dl_manager.download_dir), "extracted", self.name, version
        )
        features = self.info.features
        spec = corpus.ExampleSpec(
            num_bins=features["audio"].shape[1], video_shape=tuple(features["video"].shape[1:])
        )
        extractor = functools.partial(corpus.checked, self.extractor(), spec)
        pending = corpus.pending(sources, cache_dir, version)
        self.estimated_bytes = corpus.estimate_bytes(sources, spec, pending)
        io.require_space(
            self.data_dir_root, self.estimated_bytes, f"the build of {self.name}", RERUN
        )
        self._listing = (sources, listing_skips, cache_dir, version, manual_dir)
        self._listed = (list(self.seen.notes), not_used, dict(self.seen.ignored))
        if self.use_beam:
            # Each clip is extracted by a Beam worker into the same cache (so reruns resume and
            # the report is the same); the report is made once the pipeline has run.
            self._beam_todo = len(corpus.pending(sources, cache_dir, version))
            by_split: dict[str, list[corpus.ClipSource]] = {}
            for source in sources:
                by_split.setdefault(source.split, []).append(source)
            return {
                split: self._beam_examples(clips, extractor, cache_dir, version)
                for split, clips in sorted(by_split.items())
            }
        extraction = corpus.extract_all(
            sources,
            extractor,
            cache_dir,
            version,
            num_workers=self.num_workers,
            description=f"{self.name}/{self.builder_config.name}",
        )
        self._finish_report(extraction)
        return {
            split: self._generate_examples(clips, cache_dir, version)
            for split, clips in sorted(extraction.clips.items())
            if clips
        }

    def _finish_report(self, extraction: corpus.Extraction) -> None:
        _, listing_skips, cache_dir, version, manual_dir = self._listing
        self._report = corpus.make_report(
            f"{self.name}/{self.builder_config.name}", extraction, listing_skips, *self._listed
        )
        self._report.update(self.report_extras(extraction, cache_dir, version))
        if not self._report["written"]:
            raise ValueError(
                f"No clip of {self.name} under {manual_dir} could be used:\n"
                + corpus.format_report(self._report, max_lines=10)
            )

    def report_extras(
        self, extraction: corpus.Extraction, cache_dir: str, version: str
    ) -> dict[str, Any]:
        """More entries of the build report, from the cached clips (none here)."""
        return {}

    def _for_records(self, example: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in example.items() if k not in self.INTERNAL_KEYS}

    def _generate_examples(self, clips: list[corpus.ClipSource], cache_dir: str, version: str):
        for source in clips:
            yield source.clip_id, self._for_records(corpus.load_cached(cache_dir, source, version))

    def _beam_examples(self, clips, extractor, cache_dir: str, version: str):
        beam = tfds.core.lazy_imports.apache_beam
        keep = self._for_records

        def extract(source):
            example = corpus.extract_cached(extractor, cache_dir, version, source)
            if example is not None:
                yield source.clip_id, keep(example)

        return beam.Create(clips) | "extract clips" >> beam.FlatMap(extract)

    def download_and_prepare(self, *args: Any, **kwargs: Any) -> None:
        """TFDS's, then the build report written beside the finished records."""
        self._report = None
        self._listing = None
        super().download_and_prepare(*args, **kwargs)
        if self.use_beam and self._listing is not None:
            sources, _, cache_dir, version, _ = self._listing
            self._finish_report(corpus.collect(sources, cache_dir, version, self._beam_todo))
        if self._report is not None:
            path = os.path.join(self.data_dir, corpus.REPORT_FILE)
            io.write_json(self._report, path)
            logging.info("Build report (%s):\n%s", path, corpus.format_report(self._report))

    def report(self) -> dict[str, Any] | None:
        """The build report of the prepared records, if any."""
        path = os.path.join(self.data_dir, corpus.REPORT_FILE)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)
