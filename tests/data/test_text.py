"""Caption tokenizers: trained on the data, saved, reloaded; unknown input; empty captions."""

import json

import pytest

from tubelet.data.text import CLS, PAD, UNK, encode, load_tokenizer, save_tokenizer, train_tokenizer
from tubelet.errors import ConfigError, DataError

CAPTIONS = [
    "a red disc moves left",
    "a blue square moves right",
    "a green bar rotates",
    "a red square grows",
    "which way does it move?",
    "what colour is it?",
    "a high tone beeps",
]


@pytest.fixture(scope="module")
def trained():
    return train_tokenizer(CAPTIONS, vocab_size=200)


def test_specials_have_fixed_ids_and_cls_leads_every_caption(trained):
    assert [trained.token_to_id(t) for t in (PAD, UNK, CLS)] == [0, 1, 2]

    ids = encode(trained, "A red disc moves LEFT")

    assert ids[0] == trained.token_to_id(CLS)
    assert trained.decode(ids) == "a red disc moves left"  # lowercased, specials dropped on decode
    assert trained.token_to_id(UNK) not in ids


def test_save_reload_round_trip(trained, tmp_path):
    path = save_tokenizer(trained, tmp_path / "tok")

    assert path == tmp_path / "tok" / "tokenizer.json"
    for source in (tmp_path / "tok", path, str(tmp_path / "tok")):  # directory or file, Path or str
        reloaded = load_tokenizer(source)
        for caption in CAPTIONS:
            assert encode(reloaded, caption) == encode(trained, caption)
    assert load_tokenizer(tmp_path / "tok").get_vocab() == trained.get_vocab()


def test_unseen_characters_map_to_unk_and_unseen_words_split_into_pieces(trained):
    # No z, x, j or q appears in the training captions: a word made of them cannot be spelled.
    unknown = encode(trained, "a zzxq disc")
    assert trained.id_to_token(unknown[2]) == UNK
    assert len(unknown) == 4  # [CLS] a [UNK] disc: one [UNK] per unspellable word, nothing dropped

    # An unseen word of known letters becomes several known pieces, not [UNK].
    pieces = encode(trained, "a reds disc")[2:-1]
    assert len(pieces) >= 2 and trained.token_to_id(UNK) not in pieces


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_caption_is_a_one_line_error_naming_field_and_file(trained, text):
    with pytest.raises(DataError, match="field 'question' is empty") as caught:
        encode(trained, text, field="question", source="clips/a.mp4")

    assert str(caught.value).startswith("clips/a.mp4: ")
    assert "\n" not in str(caught.value)


def test_training_on_nothing_is_an_error():
    with pytest.raises(DataError, match="no non-empty captions"):
        train_tokenizer(["", "  "])


def test_missing_or_broken_local_tokenizer_names_the_file(tmp_path):
    with pytest.raises(DataError, match="no such tokenizer file") as caught:
        load_tokenizer(tmp_path)  # a directory without tokenizer.json: never sent to the hub
    assert str(tmp_path / "tokenizer.json") in str(caught.value)

    broken = tmp_path / "bad.json"
    broken.write_text(json.dumps({"not": "a tokenizer"}))
    with pytest.raises(DataError, match="not a Hugging Face tokenizer") as caught:
        load_tokenizer(broken)
    assert str(broken) in str(caught.value)


def test_hub_id_failure_is_a_config_error(monkeypatch):
    """A hub id goes to the hub; offline (simulated here) it fails with advice, not a traceback."""
    from tokenizers import Tokenizer

    def offline(name):
        raise Exception(f"cannot reach huggingface.co for {name}")

    monkeypatch.setattr(Tokenizer, "from_pretrained", staticmethod(offline))
    with pytest.raises(ConfigError, match="local directory") as caught:
        load_tokenizer("some-org/some-tokenizer")
    assert "'some-org/some-tokenizer'" in str(caught.value)
