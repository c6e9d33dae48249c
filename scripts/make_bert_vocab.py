#!/usr/bin/env python
"""Build a bert-base-uncased-shaped WordPiece vocabulary offline, for tokenizer tests.

The real ``vocab.txt`` (google-bert/bert-base-uncased, 30522 entries) cannot be fetched
here. This script makes one of the same size and special-token layout:

    0 [PAD]   1-99 [unused0..98]   100 [UNK]  101 [CLS]  102 [SEP]  103 [MASK]
    104-998 [unused99..993]   999.. single characters, then words and ##pieces

trained with the ``tokenizers`` WordPiece trainer (BERT normaliser: lower-case, strip
accents, CJK split; BERT pre-tokeniser) on the Python standard library's sources (English
docstrings and comments, code identifiers) and its ``pydoc_data`` help topics, plus DrawBench-style prompt phrases and
a line of common CJK characters, so that the vocabulary holds a few thousand English
words and ``##`` suffix pieces, single CJK characters, and misses emoji (as the real one).
ImageReward then appends ``[DEC]`` (30522) and ``[ENC]`` (30523): vocab size 30524.

    python scripts/make_bert_vocab.py [--out tests/fixtures/bert_vocab/vocab.txt]
"""
from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "bert_vocab" / "vocab.txt"
VOCAB_SIZE = 30522
N_UNUSED = 994  # [unused0] .. [unused993]

PHRASES = """
a photo of a red apple on a wooden table. two cats sitting on a sofa next to a window.
a painting of a lighthouse in a storm, oil on canvas, highly detailed, trending on artstation.
an astronaut riding a horse on the moon. a blue car parked in front of a yellow house.
three dogs playing in the snow at sunset. a bowl of ramen with chopsticks, studio lighting.
a futuristic city skyline at night with neon lights and flying cars. a watercolor of mountains.
a close-up portrait of an elderly woman with wrinkles, 85mm lens, bokeh. a cartoon of a penguin.
a green giraffe and a pink elephant. a stop sign on a snowy street. the word hello written in the sand.
a cup of coffee with latte art. a teddy bear wearing sunglasses. a cube made of porcupine quills.
""" * 50
CJK = "中 国 日 本 人 大 小 山 水 火 木 金 土 月 天 花 鳥 猫 犬 魚 車 雨 雪 風 東 京 北 南 上 下 の は を 一 二 三 가 나 다"


def corpus() -> list[str]:
    """The standard library's Python sources (docstrings, comments and code; not
    site-packages), the pydoc help topics, the prompt phrases and the CJK line."""
    texts: list[str] = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if "site-packages" not in path.parts:
            texts.append(path.read_text(encoding="utf-8", errors="ignore"))
    from pydoc_data.topics import topics

    texts += [topics[k] for k in sorted(topics)]
    texts += [PHRASES, CJK * 20]
    return texts


def build() -> list[str]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    head = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    head += [f"[unused{i}]" for i in range(99, N_UNUSED)]
    assert len(head) == 999 and head.index("[UNK]") == 100 and head.index("[MASK]") == 103
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE - len(head), min_frequency=1, limit_alphabet=1000,
                                        special_tokens=[], continuing_subword_prefix="##", show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    learned = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]) if t not in head]
    vocab = head + learned
    return vocab[:VOCAB_SIZE]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    vocab = build()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    words = sum(1 for t in vocab[999:] if t.isalpha() and len(t) > 1)
    pieces = sum(1 for t in vocab if t.startswith("##"))
    print(f"wrote {out}: {len(vocab)} tokens ({words} whole words, {pieces} ##pieces, "
          f"{sum(1 for t in vocab[999:] if len(t) == 1)} single characters)")


if __name__ == "__main__":
    main()
