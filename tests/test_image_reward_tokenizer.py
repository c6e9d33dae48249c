"""ImageReward's tokenisation with a vocabulary of the real size and layout: our
``BertWordPieceTokenizer`` (the ``tokenizers`` library) against transformers' slow Python
``BertTokenizer`` (``BertTokenizerLegacy`` in transformers 5; the class upstream uses
through BLIP's ``init_tokenizer``), token id for token id.

Vocabulary: tests/fixtures/bert_vocab/vocab.txt (scripts/make_bert_vocab.py): 30522
entries in bert-base-uncased's layout ([PAD] 0, [unused*], [UNK] 100, [CLS] 101, [SEP]
102, [MASK] 103, characters, ~18k words, ~7k ##pieces), plus [DEC] 30522 and [ENC] 30523
as BLIP adds them. Upstream calls ``tokenizer(prompt, padding="max_length",
truncation=True, max_length=35)`` and feeds the ids as they are: ``ImageReward.score``
keeps [CLS] first (only BLIP's ITM/decoder paths swap in [ENC]/[DEC]).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from image_reward_fixture import FIX, REF

from tts_diffusion.verifiers.image_reward import MAX_LENGTH, BertWordPieceTokenizer

VOCAB = Path(__file__).parent / "fixtures" / "bert_vocab" / "vocab.txt"

PROMPTS = [
    # DrawBench-style
    "A red colored car.",
    "A black apple and a green backpack. The apple is on the left of the backpack.",
    "An emoji of a baby panda wearing a red hat, green gloves, red shirt, and green pants.",
    "A storefront with 'Deep Learning' written on it.",
    "Two cars on the street.",
    "A triangular purple flower pot. A purple flower pot in the shape of a triangle.",
    "Hovering cow abducting aliens.",
    "A sign that says 'NeurIPS'.",
    "New York Skyline with 'Google Research Pizza Cafe' written with fireworks on the sky.",
    "Paying for a quarter-sized pizza with a pizza-sized quarter.",
    "A couch on the left of a chair.",
    # long: truncated at 35 tokens, [SEP] kept last
    "a very detailed portrait of a woman with a large hat standing in a city at sunset, with mountains in the "
    "background, small birds flying above, and a dog sitting on the right side of the street, 8k, octane render",
    "word " * 40,
    # accents, case, unicode normalisation
    "Café au lait, crème brûlée and a piñata at the Ærøskøbing fête",
    "ÉCOLE NAÏVE Über Straße İstanbul ΑΘΗΝΑ Ωmega",
    "e\u0301le\u0300ve combining accents vs élève precomposed",
    # punctuation, numbers, symbols
    "3 dogs & 2 cats (1,024 px; 3.5x zoom) -- 50% off!!! $9.99 #1 @home ~/path a/b c:d",
    "“smart quotes” ‘single’ — em dash – en dash … ellipsis «guillemets»",
    "don't won't it's the 1990s' style; 2nd, 3rd & 4th place",
    "http://example.com/a_b-c?d=e&f=g",
    # CJK, other scripts, emoji, control characters
    "\u4e2d red square \U0001F600 over the Mountains",
    "東京の夜景 and 大山 with 猫 and 犬, 가나다",
    "a cat 🐱🐶 with 👍🏽 emoji ❤️ and ✨ sparkles",
    "tab\tnew\nline\rcarriage \x00null \ufffd replacement \u200bzero\u200bwidth soft\u00adhyphen",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "مرحبا שלום привет नमस्ते",
    # WordPiece edge cases: unknown pieces, over-long words, special-token strings
    "quokka xylophonist antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 101 + " b" + " " + "z" * 99,
    "[CLS] [SEP] [MASK] [PAD] [UNK] [DEC] [ENC] [cls] [unused5] in text",
    "",
    "   ",
    "...",
]


def _reference(vocab: Path):
    from transformers.models.bert import BertTokenizerLegacy

    tok = BertTokenizerLegacy(vocab_file=str(vocab), do_lower_case=True)  # BertTokenizer.from_pretrained(...) upstream
    tok.add_special_tokens({"bos_token": "[DEC]"})  # BLIP init_tokenizer
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


@pytest.fixture(scope="module")
def tokenizers():
    return BertWordPieceTokenizer(VOCAB), _reference(VOCAB)


def test_vocabulary_layout(tokenizers):
    ours, ref = tokenizers
    lines = VOCAB.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 30522 and len(set(lines)) == 30522
    assert [lines.index(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 100, 101, 102, 103]
    assert ours.vocab_size == len(ref) == 30524  # MED_CONFIG_BASE vocab_size
    assert ref.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [30522, 30523]
    ids, _ = ours(["[DEC] [ENC]"])
    assert ids[0, :4].tolist() == [101, 30522, 30523, 102]
    assert sum(t.startswith("##") for t in lines) > 5000 and sum(t.isalpha() and len(t) > 3 for t in lines) > 10000


@pytest.mark.parametrize("i", range(len(PROMPTS)))
def test_ids_match_slow_bert_tokenizer(tokenizers, i):
    ours, ref = tokenizers
    prompt = PROMPTS[i]
    enc = ref(prompt, padding="max_length", truncation=True, max_length=MAX_LENGTH)
    ids, mask = ours([prompt])
    assert ids[0].tolist() == enc["input_ids"], ref.convert_ids_to_tokens(enc["input_ids"])
    assert mask[0].tolist() == enc["attention_mask"]


def test_batch_equals_one_by_one_and_prompts_are_not_trivial(tokenizers):
    ours, ref = tokenizers
    ids, mask = ours(PROMPTS)
    assert ids.shape == (len(PROMPTS), MAX_LENGTH) and ids.dtype.is_signed
    enc = ref(PROMPTS, padding="max_length", truncation=True, max_length=MAX_LENGTH)
    assert ids.tolist() == enc["input_ids"] and mask.tolist() == enc["attention_mask"]
    assert (ids[:, 0] == 101).all()  # [CLS] first, as upstream's score() feeds it
    truncated = [row for row in ids.tolist() if row[-1] == 102]
    assert len(truncated) >= 2  # the long prompts fill all 35 positions, [SEP] last
    assert (ids == 100).any(dim=1).sum() >= 4  # emoji / unknown pieces / over-long words -> [UNK]
    pieces = sum(t.startswith("##") for row in enc["input_ids"] for t in ref.convert_ids_to_tokens(row))
    assert pieces >= 10  # word pieces are exercised, not only whole words


def test_slow_reference_reproduces_upstream_fixture():
    """The reference class gives exactly the ids that upstream (transformers 4.30.2's
    BertTokenizer) wrote into the ImageReward fixture."""
    ref = _reference(FIX / "vocab.txt")
    enc = ref(REF["prompts"], padding="max_length", truncation=True, max_length=MAX_LENGTH)
    assert enc["input_ids"] == REF["input_ids"] and enc["attention_mask"] == REF["attention_mask"]
