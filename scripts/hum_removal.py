"""How well a mains hum is found and removed, from the audio alone (no labels, no model).

    python scripts/hum_removal.py --manual_dir=<ravdess-dev>            # the hums table
    python scripts/hum_removal.py --manual_dir=<ravdess-dev> --found    # hum found per condition

The hums table: every 20th clip of actors 01-09 (27 clips of the development copy) with a hum
20 dB below its voiced frames (`conditions.hum`: harmonics up to 1 kHz at amplitude 1/k) at
each fundamental of `--hz`, and with two hums of part of the harmonics (`odd`: 50 Hz and its
odd harmonics; `buzz`: its even ones, a rectifier's 100 Hz and its harmonics). For each:
in how many clips `audio.find_hum` finds it, the hum left after `audio.remove_hum` (median
over the clips where it is found, dB against the hum added) and the largest error of the
measured fundamental.

`--found`: over every clip of the development copy, in how many `find_hum` finds a hum, for
each condition of `--conditions` (`data_prep.features.conditions`, chains with '+'): none
should be found where none was added.
"""

import argparse
import glob
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from data_prep.features import audio, conditions

HZ = "47,48,49,49.5,50,50.2,50.5,51,52,53,57,58,59,60,61,62,63"
FOUND = (
    "original,trimmed,padded,quiet,clipped,dc_offset,telephone,microphone,noise20,noise10,"
    "pink10,babble10,hum20,hum20_drift,hum20_generator,noise10_inside,babble10_inside,"
    "resampled,reverb,opus16,mp3_32,microphone+noise20+mp3_32,telephone+noise20,"
    "trimmed+reverb+opus16"
)


def hum_row(clips: list[np.ndarray], name: str, add, hz: float | None = None) -> str:
    """A row of the table for the hum `add(x)` adds (at fundamental `hz`, if one)."""
    found, left, error = 0, [], [0.0]
    for x in clips:
        y = np.asarray(add(x), np.float64)
        hum = audio.find_hum(y - y.mean())
        if hum is None:
            continue
        found += 1
        added = y - x
        rest = audio.remove_hum(added, hum)
        left.append(10 * np.log10(np.mean(rest**2) / np.mean(added**2)))
        if hz is not None:
            error.append(abs(hum.mains_hz - hz))
    median = f"{np.median(left):7.1f}" if left else "      -"
    return f"| {name:>6} | {found:2d} / {len(clips)} | {median} | {max(error):.3f} |"


def found_in(path: str, names: list[str]) -> list[bool]:
    x = audio.load_audio(path).samples
    out = []
    for name in names:
        y = conditions.apply(name, x).astype(np.float64)
        out.append(audio.find_hum(y - y.mean()) is not None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manual_dir", required=True, help="the RAVDESS development copy")
    parser.add_argument("--hz", default=HZ, help="hum fundamentals, comma-separated")
    parser.add_argument("--found", action="store_true", help="count hums found per condition")
    parser.add_argument("--conditions", default=FOUND)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    files = sorted(glob.glob(os.path.join(args.manual_dir, "Actor_*", "*.flac")))
    if not files:
        parser.error(f"no clips under {args.manual_dir}/Actor_*")
    if args.found:
        names = args.conditions.split(",")
        with ProcessPoolExecutor(args.workers) as pool:
            rows = np.array(list(pool.map(found_in, files, [names] * len(files), chunksize=8)))
        print(f"| condition | clips with a hum found (of {len(files)}) |\n|---|---|")
        for name, count in zip(names, rows.sum(axis=0)):
            print(f"| {name} | {count} |")
        return
    chosen = [f for f in files if os.path.basename(os.path.dirname(f)) <= "Actor_09"][::20]
    clips = [audio.load_audio(f).samples.astype(np.float64) for f in chosen]
    print("| hum | found | hum left, dB (median) | fundamental's error, Hz (max) |")
    print("|---|---|---|---|")
    for hz in map(float, args.hz.split(",")):
        add = lambda x, hz=hz: conditions.hum(x, 20.0, mains_hz=hz)
        print(hum_row(clips, f"{hz:g}", add, hz))
    for name, harmonics in (("odd", range(1, 21, 2)), ("buzz", range(2, 21, 2))):
        print(hum_row(clips, name, lambda x, k=harmonics: conditions.hum(x, 20.0, harmonics=k)))


if __name__ == "__main__":
    main()
