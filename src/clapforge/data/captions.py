"""Captions from labels: the paper's template, keyword-to-caption (K2C) with a text-to-text model, and debiasing.

LAION-CLAP (arXiv 2211.06687, Sec. 2.3) turns label-only data (AudioSet labels, Epidemic Sound tags) into captions
in two ways, and de-biases the result by rewriting gendered words:

* the template, which the paper writes as "The sound of label-1, label-2, ..., and label-n". LAION's own AudioSet
  preprocessing (``audio-dataset/data_preprocess/preprocess_audioset.py``) writes "The sound of a" for one label and
  "The sounds of a, b and c" for several, keeping the AudioSet display names as they are (no lower-casing, no final
  period); the Epidemic Sound data card uses "the sounds of a, b, and c.". :func:`template_caption` follows the
  format this project fixed, "The sound of a, b and c", and like LAION's released captions keeps the labels' case.
* keyword-to-caption: a T5 from ``gagan3012/keytotext`` writes a sentence from the keywords. Which checkpoint and
  input format were used was never published (LAION-AI/CLAP issues #51, #58, #84: the appendix examples could not be
  reproduced); :class:`KeywordToCaption` therefore takes any seq2seq model and a configurable prompt.
* de-biasing: "we replace 'woman' and 'man' with 'person'" (audio-dataset ``data_card/Epidemic_sound.md``), and per
  LAION-AI/CLAP issue #84 also "her"/"his" -> "their", "etc."; the paper's example turns "a woman closes her eyes"
  into "a person closes their eyes". Their exact word list is unpublished; :data:`DEBIAS_TABLE` is ours.

:func:`add_caption_column` materialises either caption as a column with ``datasets.Dataset.map`` so that the (slow)
generation runs once and later calls load the cached result.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

__all__ = ["DEBIAS_TABLE", "KeywordToCaption", "add_caption_column", "debias", "parse_labels", "template_caption"]

# One neutral form per gendered word. Possessives need no entries of their own: the apostrophe ends a word, so
# "woman's" -> "person's" and "men's" -> "people's". "her" and "his" are context dependent and handled in
# _pronoun_by_context; "he's"/"she's" and "boys'"/"girls'" are matched as whole tokens below.
DEBIAS_TABLE: dict[str, str] = {
    "man": "person", "woman": "person", "men": "people", "women": "people",
    "gentleman": "person", "lady": "person", "gentlemen": "people", "ladies": "people",
    "boy": "child", "girl": "child", "boys": "children", "girls": "children",
    "he": "they", "she": "they", "him": "them", "hers": "theirs",
    "himself": "themselves", "herself": "themselves",
    "her": "their",  # or "them": see _pronoun_by_context
    "his": "their",  # or "theirs": see _pronoun_by_context
}

# "he is" -> "they are": singular "they" takes plural auxiliaries. Lexical verbs ("she walks") are left alone,
# because telling a verb from a noun ("he drums" vs "his drums") needs a tagger.
_AUXILIARIES = {"is": "are", "was": "were", "has": "have", "does": "do",
                "isn't": "aren't", "wasn't": "weren't", "hasn't": "haven't", "doesn't": "don't"}

# Words after which "her" is an object ("gives her the ball", "with her and") and "his" stands alone
# ("is his and mine"); before anything else (a noun or adjective) they are determiners ("her eyes", "his old car").
_NOT_A_NOUN_PHRASE = frozenset({
    "a", "an", "the", "this", "that", "these", "those", "to", "and", "or", "but", "nor", "so", "as", "than", "then",
    "if", "while", "when", "because", "of", "in", "on", "at", "by", "for", "with", "from", "into", "onto", "over",
    "under", "up", "down", "out", "off", "away", "around", "through", "again", "too", "also", "is", "are", "was",
    "were", "be", "been", "being",
})

_APOSTROPHE = "['\u2019]"  # ASCII and typographic apostrophes both occur in generated and scraped text


def _alternation(words: Sequence[str]) -> str:
    """A regex alternation of ``words``, longest first, any apostrophe matching either kind."""
    return "|".join(re.escape(w).replace("'", _APOSTROPHE) for w in sorted(words, key=len, reverse=True))


# Word edges: a hyphen binds a word into a compound that is not a person ("man-made", "she-wolf", "Pac-Man").
_START, _END = r"(?<![\w-])", r"(?![\w-])"
_AUX_RE = re.compile(rf"{_START}(he|she)(\s+)({_alternation(list(_AUXILIARIES))})(?![\w'\u2019-])", re.IGNORECASE)
_CONTRACTION_RE = re.compile(rf"{_START}(?:he|she)({_APOSTROPHE})s{_END}", re.IGNORECASE)  # "he's": read as "he is"
_PLURAL_POSSESSIVE_RE = re.compile(rf"{_START}(?:boys|girls)({_APOSTROPHE})(?!\w)", re.IGNORECASE)
_WORD_RE = re.compile(rf"{_START}({_alternation(list(DEBIAS_TABLE))}){_END}", re.IGNORECASE)
_NEXT_WORD_RE = re.compile(r"\s*(\w[\w'\u2019]*)?")


def _match_case(replacement: str, original: str) -> str:
    """``replacement`` in the case of ``original``: "MAN" -> "PERSON", "Man" -> "Person", "man" -> "person"."""
    if len(original) > 1 and original.isupper():
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def _neutral_auxiliary(match: re.Match[str]) -> str:
    aux = match[3]
    apostrophe = "\u2019" if "\u2019" in aux else "'"
    neutral = _AUXILIARIES[aux.lower().replace("\u2019", "'")].replace("'", apostrophe)
    return _match_case("they", match[1]) + match[2] + _match_case(neutral, aux)


def _pronoun_by_context(word: str, text: str, end: int) -> str:
    """Neutral form of "her"/"his", chosen by the next word (a heuristic: English needs a parser to be sure)."""
    following = _NEXT_WORD_RE.match(text, end).group(1)
    standalone = following is None or following.lower() in _NOT_A_NOUN_PHRASE
    if word == "her":
        return "them" if standalone else "their"
    return "theirs" if standalone else "their"


def _replace_word(match: re.Match[str]) -> str:
    word = match.group(1)
    key = word.lower()
    neutral = _pronoun_by_context(key, match.string, match.end()) if key in ("her", "his") else DEBIAS_TABLE[key]
    return _match_case(neutral, word)


def debias(text: str) -> str:
    """Replace gendered words with neutral ones, whole words only and keeping case, as LAION-CLAP did for K2C.

    The table (:data:`DEBIAS_TABLE`):

    ==============================================  ===============
    man, woman, gentleman, lady                      person
    men, women, gentlemen, ladies                    people
    boy, girl / boys, girls                          child / children
    he, she / him / hers / himself, herself          they / them / theirs / themselves
    his                                              their before a noun phrase, else theirs ("is his.")
    her                                              their before a noun phrase, else them ("gives her the ball")
    he's, she's                                      they're (read as "he is"; "he's got" becomes "they're got")
    he/she + is, was, has, does (and n't forms)      they + are, were, have, do
    possessives                                      man's -> person's, men's -> people's, boys' -> children's
    ==============================================  ===============

    Matching is on whole words, so "human", "manual", "German", "mandolin", "theremin", "shepherd" and "Hermes" are
    untouched, and so are hyphenated compounds ("man-made", "she-wolf", "Pac-Man"). Case follows the
    original word ("Man" -> "Person", "MAN" -> "PERSON"). "male"/"female" are kept: in AudioSet they name classes
    ("Male speech, man speaking"), and the paper only rewrites the person nouns and pronouns. Verb agreement is fixed
    for the auxiliaries above only ("she walks" -> "they walks").
    """
    if not isinstance(text, str):
        raise TypeError(f"debias expects a str, got {type(text).__name__}: {text!r}")
    text = _AUX_RE.sub(_neutral_auxiliary, text)
    text = _CONTRACTION_RE.sub(lambda m: _match_case(f"they{m[1]}re", m[0]), text)
    text = _PLURAL_POSSESSIVE_RE.sub(lambda m: _match_case(f"children{m[1]}s", m[0]), text)
    return _WORD_RE.sub(_replace_word, text)


def parse_labels(labels: str | Sequence[str] | None) -> list[str]:
    """Labels as a list: a comma-separated string is split on commas, a list is taken item by item.

    Pass a list when a label itself holds a comma (AudioSet's "Male speech, man speaking"): a string would be split.
    Whitespace is stripped and empty labels dropped; nothing is lower-cased.
    """
    if labels is None:
        return []
    if isinstance(labels, str):
        labels = labels.split(",")
    elif not isinstance(labels, Sequence) or not all(isinstance(label, str) for label in labels):
        raise TypeError(f"labels must be a comma-separated str or a list of str, got {labels!r}")
    return [label.strip() for label in labels if label.strip()]


def template_caption(labels: str | Sequence[str], *, lowercase: bool = False, apply_debias: bool = True) -> str:
    """The paper's template caption: "The sound of a", "The sound of a and b", "The sound of a, b and c".

    Labels keep their case by default, as LAION's AudioSet preprocessing does ("The sound of Dog");
    ``lowercase=True`` lower-cases them. The result is de-biased (see :func:`debias`) unless ``apply_debias=False``.
    """
    names = parse_labels(labels)
    if not names:
        raise ValueError(f"template_caption needs at least one non-empty label, got {labels!r}")
    if lowercase:
        names = [name.lower() for name in names]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    caption = f"The sound of {listed}"
    return debias(caption) if apply_debias else caption


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class KeywordToCaption:
    """Keyword-to-caption with any transformers encoder-decoder (T5, BART, ...): batched ``generate``, then debias.

    ``prompt`` is the model input with ``{keywords}`` replaced by the keywords joined with ``separator`` (plain
    substitution, so other braces are kept literally). The defaults match what keytotext's pipelines feed T5:
    ``"{keywords}"`` with keywords joined by spaces (its common_gen pipeline; its ``k2t`` models expect
    ``separator="| "``), 4 beams, ``no_repeat_ngram_size=3``, ``length_penalty=1.5``. Extra keyword arguments go to
    ``generate`` unchanged (``do_sample``, ``logits_processor``, ...).

    The model is put in eval mode (dropout would make captions, and so the dataset cache, random) and inputs are
    moved to the model's device.
    """

    def __init__(self, model: Any, tokenizer: Any, prompt: str = "{keywords}", *, separator: str = " ",
                 batch_size: int = 32, max_new_tokens: int = 64, num_beams: int = 4, max_input_length: int = 128,
                 apply_debias: bool = True, **generate_kwargs: Any) -> None:
        if "{keywords}" not in prompt:
            raise ValueError(f"prompt must contain the placeholder '{{keywords}}', got {prompt!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not getattr(model.config, "is_encoder_decoder", False):
            # A decoder-only model echoes the prompt and needs left padding; not what K2C used.
            raise ValueError(f"KeywordToCaption needs an encoder-decoder model, got {type(model).__name__}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.separator = separator
        self.batch_size = batch_size
        self.max_input_length = max_input_length
        self.apply_debias = apply_debias
        self.generate_kwargs = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "no_repeat_ngram_size": 3,
                                "length_penalty": 1.5, **generate_kwargs}

    def format_prompt(self, labels: str | Sequence[str]) -> str:
        """The model input for one example's labels (a list or a comma-separated string)."""
        keywords = parse_labels(labels)
        if not keywords:
            raise ValueError(f"keyword-to-caption needs at least one non-empty keyword, got {labels!r}")
        return self.prompt.replace("{keywords}", self.separator.join(keywords))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def _generate(self, prompts: Sequence[str]) -> list[str]:
        inputs = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.max_input_length,
                                return_tensors="pt").to(self.device)
        output_ids = self.model.generate(**inputs, **self.generate_kwargs)  # (B, L) decoder tokens only
        texts = self.tokenizer.batch_decode(output_ids, skip_special_tokens=True)
        return [" ".join(text.split()) for text in texts]  # word-level decoders can leave doubled spaces

    def __call__(self, labels: Sequence[str | Sequence[str]], progress: bool | None = None) -> list[str]:
        """One caption per example; ``labels`` holds one label list (or comma-separated string) per example.

        ``progress=None`` shows a bar when there is more than one batch.
        """
        prompts = [self.format_prompt(example) for example in labels]
        n_batches = math.ceil(len(prompts) / self.batch_size)
        show = n_batches > 1 if progress is None else progress
        captions: list[str] = []
        for batch in tqdm(_batches(prompts, self.batch_size), total=n_batches, desc="keyword-to-caption",
                          disable=not show):
            captions.extend(self._generate(batch))
        return [debias(caption) for caption in captions] if self.apply_debias else captions


def _caption_batch(batch: dict[str, list], labels_column: str, output_column: str,
                   generator: KeywordToCaption | None, lowercase: bool) -> dict[str, list[str]]:
    # Module level (not a closure) so that datasets fingerprints it from its arguments and can reuse the cache.
    labels = batch[labels_column]
    for row, value in enumerate(labels):
        if not parse_labels(value):
            raise ValueError(f"column {labels_column!r} has no label in row {row} of this batch: {value!r}")
    if generator is None:
        return {output_column: [template_caption(value, lowercase=lowercase) for value in labels]}
    return {output_column: generator(labels, progress=False)}


def add_caption_column(dataset: Any, labels_column: str, output_column: str = "caption_k2c",
                       generator: KeywordToCaption | None = None, *, batch_size: int = 64,
                       lowercase: bool = False, **map_kwargs: Any) -> Any:
    """Add ``output_column`` with one caption per row: the template (``generator=None``) or keyword-to-caption.

    ``labels_column`` holds a list of labels or a comma-separated string per row. The column is built with
    ``map(batched=True, batch_size=batch_size)``; with a generator, each map batch is split again into the
    generator's own ``batch_size``. Extra keyword arguments go to ``map`` (``num_proc``, ``cache_file_name``, ...).

    Caching: for a ``datasets.Dataset`` the result is written to an Arrow cache file named after the dataset's
    fingerprint and a hash of the arguments (the model's weights included), so calling this again with the same
    dataset and generator loads that file instead of generating. An in-memory dataset (``Dataset.from_dict``) has no
    cache directory; pass ``cache_file_name`` or ``save_to_disk`` the result to keep it. An ``IterableDataset`` is
    mapped lazily: captions are recomputed on every pass, so materialise K2C captions on a ``Dataset`` (then
    ``save_to_disk`` or ``to_parquet``) before streaming them.
    """
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        if generator is not None:
            logger.warning("add_caption_column on an IterableDataset regenerates captions on every pass; "
                           "materialise them on a datasets.Dataset first")
        return dataset.map(_caption_batch, batched=True, batch_size=batch_size,
                           fn_kwargs={"labels_column": labels_column, "output_column": output_column,
                                      "generator": generator, "lowercase": lowercase}, **map_kwargs)
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"add_caption_column expects a datasets.Dataset or IterableDataset, got {type(dataset)}")
    if labels_column not in dataset.column_names:
        raise KeyError(f"labels_column {labels_column!r} is not a column of the dataset: {dataset.column_names}")
    map_kwargs.setdefault("desc", "template captions" if generator is None else "keyword-to-caption")
    return dataset.map(_caption_batch, batched=True, batch_size=batch_size,
                       fn_kwargs={"labels_column": labels_column, "output_column": output_column,
                                  "generator": generator, "lowercase": lowercase}, **map_kwargs)
