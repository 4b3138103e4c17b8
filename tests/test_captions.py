"""Captions from labels: template and debiasing with exact strings, keyword-to-caption end to end with a tiny T5."""

import datasets
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList, T5Config, T5ForConditionalGeneration

from clapforge.data.captions import KeywordToCaption, add_caption_column, debias, parse_labels, template_caption

# ---------------------------------------------------------------------------------------------- template and debias

TEMPLATE_CASES = [
    (["dog"], "The sound of dog"),
    (["dog", "rain"], "The sound of dog and rain"),
    (["dog", "rain", "thunder"], "The sound of dog, rain and thunder"),
    (["a", "b", "c", "d"], "The sound of a, b, c and d"),
    ("dog, rain ,thunder", "The sound of dog, rain and thunder"),  # comma-separated string, whitespace stripped
    (["  Dog ", "", "   ", "Rain"], "The sound of Dog and Rain"),  # empty labels dropped, case kept (as LAION)
    (["Speech", "Man speaking"], "The sound of Speech and Person speaking"),  # debiased
    (["Male speech, man speaking", "Music"], "The sound of Male speech, person speaking and Music"),  # list keeps ','
    (["woman", "girls"], "The sound of person and children"),
]


@pytest.mark.parametrize(("labels", "expected"), TEMPLATE_CASES)
def test_template_caption(labels, expected):
    assert template_caption(labels) == expected


def test_template_caption_options():
    assert template_caption(["Dog", "Man"], lowercase=True) == "The sound of dog and person"
    assert template_caption(["Dog", "Man"], apply_debias=False) == "The sound of Dog and Man"


@pytest.mark.parametrize("labels", [[], ["", "  "], " , ,", ""])
def test_template_caption_without_labels_names_the_input(labels):
    with pytest.raises(ValueError, match="at least one non-empty label") as error:
        template_caption(labels)
    assert repr(labels) in str(error.value)


def test_parse_labels_rejects_other_types():
    assert parse_labels(None) == []
    with pytest.raises(TypeError, match="comma-separated str or a list of str"):
        parse_labels([1, 2])


DEBIAS_CASES = [
    # the paper's own examples (Sec. 2.3 table): raw T5 output -> de-biased
    ("a woman closes her eyes and thuds the lid of a washing machine",
     "a person closes their eyes and thuds the lid of a washing machine"),
    ("A man chiseling metal with a hammer", "A person chiseling metal with a hammer"),
    # nouns, plurals, possessives
    ("men and women talk", "people and people talk"),
    ("a boy and two girls", "a child and two children"),
    ("the woman's voice and the men's choir", "the person's voice and the people's choir"),
    ("the boys' toys", "the children's toys"),
    ("the girls\u2019 laughter", "the children\u2019s laughter"),
    ("a lady and a gentleman; ladies and gentlemen", "a person and a person; people and people"),
    # case is preserved
    ("Man", "Person"), ("MAN", "PERSON"), ("WOMEN", "PEOPLE"), ("He", "They"), ("HIS CAR", "THEIR CAR"),
    # pronouns, with "her"/"his" chosen by the next word
    ("she laughs at him", "they laughs at them"),  # only auxiliaries are re-agreed
    ("he is singing and she was humming", "they are singing and they were humming"),
    ("She isn't here, he doesn't care", "They aren't here, they don't care"),
    ("he's whistling; she's gone", "they're whistling; they're gone"),
    ("he'll come, she'd go", "they'll come, they'd go"),
    ("gives her the ball", "gives them the ball"),
    ("talks to her.", "talks to them."),
    ("her dog barks", "their dog barks"),
    ("her 2 dogs", "their 2 dogs"),
    ("his old car", "their old car"),
    ("the bag is his.", "the bag is theirs."),
    ("the choice is hers", "the choice is theirs"),
    ("he hurts himself, she sees herself", "they hurts themselves, they sees themselves"),
    # punctuation around words
    ("(man), woman! girl? boy;", "(person), person! child? child;"),
    ('"Man" said', '"Person" said'),
    # substring traps: untouched
    ("human manual theremin shepherd mandolin German Hermes Herman", "human manual theremin shepherd mandolin German "
                                                                     "Hermes Herman"),
    ("the other heather hen, helmet, hiss, shed, herd, mankind, hehe", "the other heather hen, helmet, hiss, shed, "
                                                                       "herd, mankind, hehe"),
    # hyphenated compounds are not persons
    ("a man-made drone, a she-wolf, Pac-Man", "a man-made drone, a she-wolf, Pac-Man"),
    ("", ""),
]


@pytest.mark.parametrize(("text", "expected"), DEBIAS_CASES)
def test_debias(text, expected):
    assert debias(text) == expected


def test_debias_is_idempotent_and_rejects_non_text():
    for text, expected in DEBIAS_CASES:
        assert debias(expected) == expected, text
    with pytest.raises(TypeError, match="debias expects a str"):
        debias(None)


# ------------------------------------------------------------------------------------- keyword-to-caption, tiny T5

WORDS = ["a", "man", "woman", "his", "her", "closes", "eyes", "dog", "barks", "rain", "thunder", "siren", "engine",
         "door", "knock", "speech", "music", "bird", "the", "of", "describe", "sound", ":", "|"]


def make_t5_tokenizer():
    """A word-level tokenizer in T5's id convention: <pad>=0 (also decoder start), </s>=1, <unk>=2."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def t5_tokenizer():
    return make_t5_tokenizer()


@pytest.fixture(scope="module")
def tiny_t5(t5_tokenizer):
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(t5_tokenizer), d_model=16, d_ff=32, d_kv=8, num_layers=1, num_decoder_layers=1,
                      num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.1)
    return T5ForConditionalGeneration(config)


class ForceWords(LogitsProcessor):
    """Makes generate emit a fixed word sequence and then </s>, so that the text to be debiased is known."""

    def __init__(self, token_ids: list[int], eos_token_id: int):
        self.token_ids = [*token_ids, eos_token_id]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = min(input_ids.shape[1] - 1, len(self.token_ids) - 1)  # decoder inputs start with the start token
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.token_ids[step]] = 0.0
        return forced


@pytest.fixture
def count_generate(monkeypatch):
    """Records the batch size of every generate call. Patched on the class so the model (and its hash) is unchanged."""
    calls: list[int] = []
    original = T5ForConditionalGeneration.generate

    def generate(self, *args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(T5ForConditionalGeneration, "generate", generate)
    return calls


def test_keyword_to_caption_generates_in_batches_and_debiases(tiny_t5, t5_tokenizer, count_generate):
    forced = t5_tokenizer.convert_tokens_to_ids(["a", "woman", "closes", "her", "eyes"])
    k2c = KeywordToCaption(tiny_t5, t5_tokenizer, prompt="describe the sound : {keywords}", separator=" | ",
                           batch_size=2, num_beams=2, max_new_tokens=8,
                           logits_processor=LogitsProcessorList([ForceWords(forced, t5_tokenizer.eos_token_id)]))
    assert not tiny_t5.training  # dropout off: captions (and the dataset cache) must be deterministic
    assert k2c.format_prompt("dog, rain") == "describe the sound : dog | rain"
    captions = k2c([["dog", "barks"], "rain, thunder", ["siren"], "door,knock,engine", ["bird"]])
    assert count_generate == [2, 2, 1]
    assert captions == ["a person closes their eyes"] * 5
    raw = KeywordToCaption(tiny_t5, t5_tokenizer, batch_size=8, max_new_tokens=8, apply_debias=False,
                           logits_processor=LogitsProcessorList([ForceWords(forced, t5_tokenizer.eos_token_id)]))
    assert raw([["dog"]]) == ["a woman closes her eyes"]


def test_keyword_to_caption_runs_unconstrained(tiny_t5, t5_tokenizer):
    """Random weights give nonsense, but plain beam search runs and returns one debiased string per example."""
    k2c = KeywordToCaption(tiny_t5, t5_tokenizer, batch_size=3, max_new_tokens=6)
    captions = k2c([["dog"], ["rain", "thunder"], "music, speech", ["man"]], progress=True)
    assert len(captions) == 4 and all(isinstance(c, str) for c in captions)
    assert all(c == debias(c) for c in captions)
    assert k2c.device == torch.device("cpu")


def test_keyword_to_caption_rejects_bad_input(tiny_t5, t5_tokenizer):
    with pytest.raises(ValueError, match="placeholder"):
        KeywordToCaption(tiny_t5, t5_tokenizer, prompt="no placeholder")
    with pytest.raises(ValueError, match="batch_size"):
        KeywordToCaption(tiny_t5, t5_tokenizer, batch_size=0)
    with pytest.raises(ValueError, match=r"keyword.*' , '"):
        KeywordToCaption(tiny_t5, t5_tokenizer)([" , "])


# ------------------------------------------------------------------------------------------ datasets.map column

def labelled_dataset(tmp_path) -> datasets.Dataset:
    """A dataset read back from disk, so that map has a cache directory (an in-memory one would not cache)."""
    labels = [["dog", "barks"], ["Rain", "man"], ["siren"], ["door", "knock", "engine"], ["bird", "woman"]]
    as_strings = [", ".join(row) for row in labels]
    datasets.Dataset.from_dict({"labels": labels, "tags": as_strings, "key": list("abcde")}).save_to_disk(tmp_path)
    return datasets.load_from_disk(str(tmp_path))


def test_add_template_caption_column(tmp_path):
    dataset = labelled_dataset(tmp_path / "data")
    expected = ["The sound of dog and barks", "The sound of Rain and person", "The sound of siren",
                "The sound of door, knock and engine", "The sound of bird and person"]
    assert add_caption_column(dataset, "labels", "caption")["caption"] == expected
    assert add_caption_column(dataset, "tags", "caption")["caption"] == expected  # comma-separated strings
    lowered = add_caption_column(dataset, "labels", "caption", lowercase=True)
    assert lowered["caption"][1] == "The sound of rain and person"


def test_add_k2c_column_batches_and_caches(tmp_path, tiny_t5, t5_tokenizer, count_generate):
    dataset = labelled_dataset(tmp_path / "data")
    forced = t5_tokenizer.convert_tokens_to_ids(["a", "man", "closes", "his", "eyes"])
    k2c = KeywordToCaption(tiny_t5, t5_tokenizer, batch_size=2, num_beams=1, max_new_tokens=8,
                           logits_processor=LogitsProcessorList([ForceWords(forced, t5_tokenizer.eos_token_id)]))

    first = add_caption_column(dataset, "labels", generator=k2c, batch_size=4)
    # map batches of 4 rows (4 + 1), each split into the generator's batches of 2
    assert count_generate == [2, 2, 1]
    assert first.column_names == ["labels", "tags", "key", "caption_k2c"]
    assert first["caption_k2c"] == ["a person closes their eyes"] * 5
    assert first["key"] == list("abcde")
    assert len(first.cache_files) == 1 and first.cache_files != dataset.cache_files

    second = add_caption_column(dataset, "labels", generator=k2c, batch_size=4)
    assert count_generate == [2, 2, 1]  # nothing generated again: read back from the cache file
    assert second.cache_files == first.cache_files
    assert second["caption_k2c"] == first["caption_k2c"]

    add_caption_column(dataset, "labels", generator=k2c, batch_size=4, load_from_cache_file=False)
    assert count_generate == [2, 2, 1] * 2  # and the cache, not chance, is what skipped the work

    k2c.prompt = "describe : {keywords}"  # another generator setting is another cache entry, never a stale hit
    third = add_caption_column(dataset, "labels", generator=k2c, batch_size=4)
    assert count_generate == [2, 2, 1] * 3
    assert third.cache_files != first.cache_files


def test_add_caption_column_on_iterable_dataset_is_lazy(tmp_path, tiny_t5, t5_tokenizer, count_generate):
    stream = labelled_dataset(tmp_path / "data").to_iterable_dataset()
    k2c = KeywordToCaption(tiny_t5, t5_tokenizer, batch_size=8, num_beams=1, max_new_tokens=4)
    mapped = add_caption_column(stream, "labels", generator=k2c, batch_size=8)
    assert count_generate == []  # nothing runs until iterated
    rows = list(mapped)
    assert len(rows) == 5 and all(isinstance(row["caption_k2c"], str) for row in rows)
    list(mapped)
    assert count_generate == [5, 5]  # a stream regenerates on every pass: materialise on a Dataset instead
    template = add_caption_column(stream, "tags", "caption")
    assert next(iter(template))["caption"] == "The sound of dog and barks"


def test_add_caption_column_errors_name_the_input(tmp_path):
    dataset = datasets.Dataset.from_dict({"labels": [["dog"], [], ["rain"]]})
    with pytest.raises(KeyError, match="'tags'"):
        add_caption_column(dataset, "tags")
    with pytest.raises(ValueError, match=r"column 'labels' has no label in row 1.*\[\]"):
        add_caption_column(dataset, "labels")
    with pytest.raises(TypeError, match="datasets.Dataset or IterableDataset"):
        add_caption_column([{"labels": ["dog"]}], "labels")
