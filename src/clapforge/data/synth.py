"""The built-in synthetic corpus: `clapforge synth OUT --clips N --seed S`.

A labelled, captioned sound corpus made with numpy in seconds, so that the demo, tests and benchmarks have real
streamed data with no download. It is written in the LAION-Audio-630K shard layout of the data contract
(OUT/<split>/shard-*.tar with "<key>.flac" + "<key>.json", OUT/<split>/sizes.json, OUT/manifest.json) plus
OUT/labels.json for zero-shot classification.

Sounds (15 event types, `synth_sounds.EVENT_TYPES`): steady_tone, beeping, rising_sweep, falling_sweep, siren,
noise_burst, click_train, hum, buzz, plucked_string, drum_hits, rain, wind, dog_bark, bell.

Attributes a caption names (each also stored in the clip's json):
- pitch "low" / "high" for pitched events (about two octaves apart; the drawn f0 is stored as `f0_hz`);
- speed "slow" / "fast" for periodic events (rates 3x or more apart, stored as `rate_hz`); named only when the clip
  holds at least 1.5 periods, otherwise the speed cannot be heard and `speed` is "";
- loudness "quiet" (peak 0.06-0.12) / "loud" (peak 0.6-0.9): every clip is peak-normalised to its class's peak, so
  nothing clips and the two classes differ by about 17 dB;
- length "short" (<= 2.5 s) / "long" (>= 10 s), nothing in between;
- background: with probability 0.3 a second, different event (random pitch and speed, not described) is mixed in,
  its RMS 10-16 dB below the main event's; it becomes the second `tag` and a caption phrase.
An attribute that does not apply is "" in the json (never null, so every json has the same schema).

Durations: with probability 0.3 log-uniform over [1, 30] s, otherwise log-uniform over [1, 5] s: mean about 4.3 s,
about 10% of clips longer than 10 s (where fusion matters), so 2,000 clips are about 2.4 hours of audio, 230 MB of
FLAC, and about 40 CPU-seconds to make (render about 60%, FLAC encoding 40%; ~25 s wall on 2 cores).

Splits: `train` (80% by default), `validation` (10%) and `test` (10%; rounded half to even, at least one clip each
from 3 clips up), each with the event types balanced (counts differ by at most one). Train and validation captions
are written from the training phrasings, so validation measures generalisation to new clips; the test split's
captions come from a disjoint held-out phrasing set (sentence templates, noun phrases, verbs, attribute words), so
test retrieval measures generalisation to unseen wording. Zero-shot classification uses the prompt
"This is a sound of {label}." with the label names of labels.json, which are not caption templates or noun phrases
of either phrasing set (they share the head words, e.g. "a siren" against "a loud police siren wails").

Each clip has 1-5 captions: the first names every attribute of the clip, the others each attribute with probability
0.6. Keys are "<split>-<index>" (no dots). Same seed, same bytes: every clip draws from its own random generator
seeded by (seed, split, index), independent of the number of worker processes.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing.pool import Pool
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..atomic import atomic_write_json
from ..prompts import DEFAULT_PROMPT
from .shards import SAMPLE_RATE, ShardWriter, encode_flac, write_sizes
from .synth_sounds import EVENT_TYPES, EventDraw, render_clip

SPLITS = ("train", "validation", "test")
ZERO_SHOT_PROMPT = DEFAULT_PROMPT  # the prompt labels.json declares for its class names
BACKGROUND_PROBABILITY = 0.3
LONG_MIX_PROBABILITY = 0.3  # share of durations drawn from the full 1-30 s range rather than 1-5 s
SHORT_MAX_S, LONG_MIN_S = 2.5, 10.0
PEAKS = {"quiet": (0.06, 0.12), "loud": (0.6, 0.9)}
BACKGROUND_DB = (-16.0, -10.0)
ATTRIBUTE_KEEP_PROBABILITY = 0.6
MIN_PERIODS_FOR_SPEED = 1.5

# Zero-shot label names, used only in ZERO_SHOT_PROMPT (never as a caption noun phrase).
LABELS: dict[str, str] = {
    "steady_tone": "a steady tone", "beeping": "beeping", "rising_sweep": "a rising sweep",
    "falling_sweep": "a falling sweep", "siren": "a siren", "noise_burst": "bursts of noise", "click_train": "clicking",
    "hum": "a hum", "buzz": "a buzz", "plucked_string": "a plucked string", "drum_hits": "drum hits", "rain": "rain",
    "wind": "wind", "dog_bark": "a dog barking", "bell": "a bell",
}

# ---------------------------------------------------------------------------------------------------------------
# Phrasings: "train" (train and validation captions) and "test" (held-out), disjoint string by string.
# Noun phrases starting with "a "/"an " are countable (the article is recomputed when adjectives come first).

NOUNS: dict[str, dict[str, list[str]]] = {
    "steady_tone": {"train": ["a steady sine tone", "a pure tone", "a constant tone"],
                    "test": ["an unwavering sine wave", "a flat electronic tone"]},
    "beeping": {"train": ["electronic beeping", "a series of beeps", "a beeping alarm"],
                "test": ["a sequence of electronic bleeps", "a pulsing beep"]},
    "rising_sweep": {"train": ["a rising tone sweep", "an upward sweep", "a rising chirp"],
                     "test": ["an ascending glide", "an upward pitch glide"]},
    "falling_sweep": {"train": ["a falling tone sweep", "a downward sweep", "a falling chirp"],
                      "test": ["a descending glide", "a downward pitch glide"]},
    "siren": {"train": ["a police siren", "an emergency siren", "a wailing siren"],
              "test": ["an ambulance siren", "a siren alarm"]},
    "noise_burst": {"train": ["a burst of white noise", "a noise burst", "a blast of static"],
                    "test": ["a sudden hiss of noise", "a static blast"]},
    "click_train": {"train": ["rhythmic clicking", "a train of clicks", "a ticking click"],
                    "test": ["a series of sharp ticks", "a clicking pulse train"]},
    "hum": {"train": ["an electrical hum", "a mains hum", "a humming transformer"],
            "test": ["a power line drone", "a droning hum"]},
    "buzz": {"train": ["buzzing", "an electric buzz", "a harsh buzz"],
             "test": ["a raspy buzzer", "an insect-like buzzing"]},
    "plucked_string": {"train": ["a plucked guitar string", "a harp pluck", "a plucked string instrument"],
                       "test": ["a twanging string", "a picked string note"]},
    "drum_hits": {"train": ["a series of drum hits", "a kick drum", "a thumping drum"],
                  "test": ["pounding percussion", "a tom drum"]},
    "rain": {"train": ["pattering rain", "rainfall", "rain on a roof"],
             "test": ["drizzle", "a light shower of raindrops"]},
    "wind": {"train": ["blowing wind", "gusting wind", "a breeze"],
             "test": ["a whooshing gale", "a windstorm"]},
    "dog_bark": {"train": ["a barking dog", "a dog bark", "a dog"],
                 "test": ["a hound", "a guard dog"]},
    "bell": {"train": ["a church bell", "a ringing bell", "a chiming bell"],
             "test": ["a tolling bell", "a gong-like bell"]},
}

VERBS: dict[str, dict[str, list[str]]] = {
    "steady_tone": {"train": ["sounds", "holds steady"], "test": ["persists", "continues"]},
    "beeping": {"train": ["goes off", "beeps"], "test": ["pulses", "bleeps"]},
    "rising_sweep": {"train": ["sweeps upward", "rises"], "test": ["climbs", "glides up"]},
    "falling_sweep": {"train": ["sweeps downward", "falls"], "test": ["drops", "glides down"]},
    "siren": {"train": ["wails", "blares"], "test": ["howls", "whoops"]},
    "noise_burst": {"train": ["hisses", "bursts out"], "test": ["erupts", "crackles out"]},
    "click_train": {"train": ["clicks", "ticks"], "test": ["taps", "clacks"]},
    "hum": {"train": ["hums", "drones"], "test": ["murmurs", "whirs"]},
    "buzz": {"train": ["buzzes", "rasps"], "test": ["zaps", "whines"]},
    "plucked_string": {"train": ["plays", "twangs"], "test": ["strums", "resonates"]},
    "drum_hits": {"train": ["thumps", "beats"], "test": ["pounds", "thuds"]},
    "rain": {"train": ["patters", "falls steadily"], "test": ["drips", "sprinkles"]},
    "wind": {"train": ["blows", "gusts"], "test": ["whooshes", "roars"]},
    "dog_bark": {"train": ["barks", "yelps"], "test": ["woofs", "yaps"]},
    "bell": {"train": ["rings", "chimes"], "test": ["tolls", "clangs"]},
}

# {np}: noun phrase with adjectives, {verb}: a verb of the event, {rest}: speed, length and background phrases.
TEMPLATES: dict[str, list[str]] = {
    "train": ["{np} {verb}{rest}", "the sound of {np}{rest}", "{np} is heard{rest}", "an audio clip of {np}{rest}",
              "{np}{rest}"],
    "test": ["a recording of {np}{rest}", "you can hear {np}{rest}", "in this clip, {np} {verb}{rest}",
             "listen to {np}{rest}"],
}

# Pitch and loudness are adjectives; speed, length and background are phrases after the verb.
ADJECTIVES: dict[str, dict[str, dict[str, list[str]]]] = {
    "pitch": {"low": {"train": ["low", "low-pitched", "deep"], "test": ["bass", "low-toned"]},
              "high": {"train": ["high", "high-pitched", "shrill"], "test": ["piercing", "treble"]}},
    "loudness": {"quiet": {"train": ["quiet", "soft", "faint"], "test": ["hushed", "muted"]},
                 "loud": {"train": ["loud", "powerful", "strong"], "test": ["booming", "intense"]}},
}
PHRASES: dict[str, dict[str, dict[str, list[str]]]] = {
    "speed": {"fast": {"train": [" at a fast pace", " in quick succession", " rapidly"],
                       "test": [" at a brisk tempo", " in a hurried rhythm"]},
              "slow": {"train": [" at a slow pace", " slowly", " with long gaps"],
                       "test": [" at a leisurely tempo", " in an unhurried rhythm"]}},
    "length": {"short": {"train": [" briefly", " for a moment"], "test": [" for just a second or two", " momentarily"]},
               "long": {"train": [" for a long time", " at length"],
                        "test": [" for an extended period", " on and on"]}},
}
BACKGROUND_PHRASES: dict[str, list[str]] = {
    "train": [" with {bg} in the background", " while {bg} plays behind it", " over {bg}"],
    "test": [" accompanied by distant {bg}", " with {bg} underneath", " against a backdrop of {bg}"],
}


def phrasing_set(pool: str) -> set[str]:
    """Every phrase (template, noun, verb, attribute word or phrase) of one phrasing pool: "train" or "test"."""
    phrases = set(TEMPLATES[pool]) | set(BACKGROUND_PHRASES[pool])
    for table in (NOUNS, VERBS):
        phrases.update(p for entry in table.values() for p in entry[pool])
    for table in (ADJECTIVES, PHRASES):
        phrases.update(p for values in table.values() for entry in values.values() for p in entry[pool])
    return phrases


# ---------------------------------------------------------------------------------------------------------------
# The corpus plan: everything about a clip except its audio


@dataclass(frozen=True)
class ClipSpec:
    key: str
    split: str
    duration: float  # seconds, a whole number of samples at 48 kHz (rounded to 10 ms)
    main: EventDraw
    pitch: str  # "low" | "high" | ""
    speed: str  # "slow" | "fast" | ""
    loudness: str  # "quiet" | "loud"
    length: str  # "short" | "long" | ""
    background: EventDraw | None
    background_db: float  # background RMS relative to the main event's (0 when there is none)
    peak: float
    seed: int  # of the audio's random generator
    captions: tuple[str, ...]

    def meta(self) -> dict:
        """The sample's json: contract fields (text, tag, duration) plus the attributes."""
        return {
            "text": list(self.captions),
            "tag": [self.main.event] + ([self.background.event] if self.background else []),
            "duration": self.duration,
            "event": self.main.event, "pitch": self.pitch, "speed": self.speed, "loudness": self.loudness,
            "length": self.length, "background": self.background.event if self.background else "",
            "f0_hz": round(self.main.f0, 3), "rate_hz": round(self.main.rate, 4),
            "background_db": round(self.background_db, 2), "peak": round(self.peak, 4),
            "split": self.split, "phrasing": _pool(self.split),
        }


def _pool(split: str) -> str:
    return "test" if split == "test" else "train"


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _draw_duration(rng: np.random.Generator) -> float:
    high = 30.0 if rng.random() < LONG_MIX_PROBABILITY else 5.0
    return round(_log_uniform(rng, 1.0, high), 2)


def _draw_event(rng: np.random.Generator, event: str) -> tuple[EventDraw, str, str]:
    """(draw, pitch word, speed word) for one event; words are "" when the attribute does not apply."""
    kind = EVENT_TYPES[event]
    pitch = str(rng.choice(["low", "high"])) if kind.pitch_hz else ""
    speed = str(rng.choice(["slow", "fast"])) if kind.rate_hz else ""
    f0 = _log_uniform(rng, *kind.pitch_hz[pitch]) if pitch else float(rng.uniform(*kind.default_f0))
    rate = _log_uniform(rng, *kind.rate_hz[speed]) if speed else 0.0
    return EventDraw(event, f0, rate), pitch, speed


def _length_word(duration: float) -> str:
    return "short" if duration <= SHORT_MAX_S else "long" if duration >= LONG_MIN_S else ""


def _split_sizes(clips: int, validation_fraction: float, test_fraction: float) -> dict[str, int]:
    validation, test = round(clips * validation_fraction), round(clips * test_fraction)
    if clips >= 3:  # every split gets a clip, so a tiny corpus still has all three
        validation, test = max(validation, 1), max(test, 1)
    if validation + test > clips:
        raise ValueError(f"validation and test fractions leave no training clips out of {clips}")
    return {"train": clips - validation - test, "validation": validation, "test": test}


def plan_clip(seed: int, split: str, index: int, event: str) -> ClipSpec:
    """Everything about one clip except its audio, from its own generator (independent of the other clips)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), 0, index])
    duration = _draw_duration(rng)
    main, pitch, speed = _draw_event(rng, event)
    if speed and duration * main.rate < MIN_PERIODS_FOR_SPEED:
        speed = ""  # too few repetitions to hear the speed: the caption must not claim it
    loudness = str(rng.choice(["quiet", "loud"]))
    background, background_db = None, 0.0
    if rng.random() < BACKGROUND_PROBABILITY:
        others = [name for name in EVENT_TYPES if name != event]
        background = _draw_event(rng, str(rng.choice(others)))[0]
        background_db = float(rng.uniform(*BACKGROUND_DB))
    spec = ClipSpec(
        key=f"{split}-{index:06d}", split=split, duration=duration, main=main, pitch=pitch, speed=speed,
        loudness=loudness, length=_length_word(duration), background=background, background_db=background_db,
        peak=float(rng.uniform(*PEAKS[loudness])), seed=int(rng.integers(2**63)), captions=(),
    )
    count = int(rng.integers(1, 6))
    captions = tuple(write_caption(rng, spec, _pool(split), complete=i == 0) for i in range(count))
    return dataclasses.replace(spec, captions=captions)


def plan_corpus(clips: int, seed: int = 0, validation_fraction: float = 0.1,
                test_fraction: float = 0.1) -> list[ClipSpec]:
    """The whole corpus without audio (cheap: use it to inspect metadata and captions of a large corpus)."""
    if clips < 1:
        raise ValueError(f"--clips must be at least 1, got {clips}")
    if seed < 0:
        raise ValueError(f"--seed must be non-negative, got {seed}")
    names = list(EVENT_TYPES)
    specs = []
    for split, size in _split_sizes(clips, validation_fraction, test_fraction).items():
        # Balanced classes per split: each event type size // 15 or size // 15 + 1 times, in a random order.
        rng = np.random.default_rng([seed, SPLITS.index(split), 1])
        order = rng.permutation(np.resize(np.arange(len(names)), size))
        specs.extend(plan_clip(seed, split, index, names[event]) for index, event in enumerate(order.tolist()))
    return specs


# ---------------------------------------------------------------------------------------------------------------
# Captions


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def _noun_phrase(noun: str, adjectives: list[str]) -> str:
    """Put adjectives before a noun, fixing the article: ("an upward sweep", ["loud"]) -> "a loud upward sweep"."""
    words = noun.split(" ", 1)
    if words[0] in ("a", "an") and len(words) == 2:
        body = " ".join([*adjectives, words[1]])
        return f"{_article(body)} {body}"
    return " ".join([*adjectives, noun])


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def write_caption(rng: np.random.Generator, spec: ClipSpec, pool: str, complete: bool) -> str:
    """One caption of `spec` from phrasing pool `pool`; `complete` names every attribute, else each with p=0.6."""

    def keep(value: str) -> bool:
        return bool(value) and (complete or rng.random() < ATTRIBUTE_KEEP_PROBABILITY)

    event = spec.main.event
    adjectives = [_pick(rng, ADJECTIVES[name][value][pool])
                  for name, value in (("loudness", spec.loudness), ("pitch", spec.pitch)) if keep(value)]
    rest = "".join(_pick(rng, PHRASES[name][value][pool])
                   for name, value in (("speed", spec.speed), ("length", spec.length)) if keep(value))
    if spec.background is not None and keep(spec.background.event):
        background = _pick(rng, NOUNS[spec.background.event][pool])
        rest += _pick(rng, BACKGROUND_PHRASES[pool]).format(bg=background)
    caption = _pick(rng, TEMPLATES[pool]).format(
        np=_noun_phrase(_pick(rng, NOUNS[event][pool]), adjectives), verb=_pick(rng, VERBS[event][pool]), rest=rest)
    return caption[0].upper() + caption[1:]


# ---------------------------------------------------------------------------------------------------------------
# Writing


def render_spec(spec: ClipSpec, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(T,) float32 audio of a planned clip."""
    return render_clip(spec.main, spec.background, spec.background_db, spec.peak, spec.duration, sample_rate,
                       spec.seed)


def _encode_sample(job: tuple[ClipSpec, int]) -> tuple[ClipSpec, bytes]:
    spec, sample_rate = job
    return spec, encode_flac(render_spec(spec, sample_rate), sample_rate)


def _encoded(specs: list[ClipSpec], sample_rate: int, pool: Pool | None) -> Iterator[tuple[ClipSpec, bytes]]:
    """Encoded clips in plan order (an ordered imap: the output bytes do not depend on the number of workers)."""
    jobs = [(spec, sample_rate) for spec in specs]
    if pool is None:
        return map(_encode_sample, jobs)
    return pool.imap(_encode_sample, jobs, chunksize=4)


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse to mix with an earlier corpus (sizes.json merges), unless told to replace it."""
    existing = [out / split for split in SPLITS if (out / split).exists()]
    if existing and not overwrite:
        raise ValueError(f"{out} already holds a corpus ({existing[0].name}/); pass --overwrite to replace it")
    for split_dir in existing:
        shutil.rmtree(split_dir)
    out.mkdir(parents=True, exist_ok=True)


def _manifest(specs: list[ClipSpec], seed: int, sample_rate: int) -> dict:
    def summary(selected: list[ClipSpec]) -> dict:
        return {"clips": len(selected), "hours": round(sum(s.duration for s in selected) / 3600, 4)}

    splits = {}
    for split in SPLITS:
        selected = [s for s in specs if s.split == split]
        splits[split] = {**summary(selected), "phrasing": _pool(split),
                         "events": {name: sum(s.main.event == name for s in selected) for name in EVENT_TYPES}}
    return {
        **summary(specs), "splits": splits, "skipped": [], "created_by": "clapforge synth", "seed": seed,
        "sample_rate": sample_rate, "classes": list(EVENT_TYPES), "zero_shot_prompt": ZERO_SHOT_PROMPT,
        "design": __doc__.split("\n\n", 2)[2].strip(),
        "phrasings": {pool: sorted(phrasing_set(pool)) for pool in ("train", "test")},
    }


def labels_json() -> dict:
    """OUT/labels.json: class list (index order) and each class's label name for the zero-shot prompt."""
    return {"classes": list(EVENT_TYPES), "labels": dict(LABELS), "prompt": ZERO_SHOT_PROMPT}


def synthesize_corpus(out: str | Path, clips: int, seed: int = 0, *, validation_fraction: float = 0.1,
                      test_fraction: float = 0.1, sample_rate: int = SAMPLE_RATE, workers: int | None = None,
                      shard_bytes: int = 64 * 2**20, overwrite: bool = False, progress: bool = True) -> dict:
    """Generate the corpus into `out` (see the module docstring) and return its manifest."""
    out = Path(out)
    specs = plan_corpus(clips, seed, validation_fraction, test_fraction)
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    _prepare_out(out, overwrite)
    with ExitStack() as stack:
        # fork, and before the progress bar starts its monitor thread: workers start at once without re-importing
        # torch and transformers (spawn would take seconds per worker).
        pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers)) if workers > 1 else None
        writers = {split: stack.enter_context(ShardWriter(out / split, max_bytes=shard_bytes)) for split in SPLITS}
        bar = stack.enter_context(tqdm(total=len(specs), unit="clip", desc="synth", disable=not progress))
        for spec, flac in _encoded(specs, sample_rate, pool):
            writers[spec.split].write(spec.key, flac, spec.meta())
            bar.update()
        for split, writer in writers.items():
            write_sizes(out / split, writer.close())
    manifest = _manifest(specs, seed, sample_rate)
    atomic_write_json(out / "labels.json", labels_json())
    atomic_write_json(out / "manifest.json", manifest)
    return manifest
