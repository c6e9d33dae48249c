"""Tiny random transformers models written to disk in code (no downloads), for the
reflection critics' and refiners' plumbing: a GPT-2 causal LM with a word-level tokenizer
and a BLIP captioner with a BERT word-piece tokenizer."""
from __future__ import annotations

from pathlib import Path

WORDS = ("a photo of circle square triangle star red green blue yellow purple orange one two three four and "
         "left right above below yes no is it true that the question answer what in this image differs from "
         "rewritten prompt problems fails exactly there are make sure").split()


def write_tiny_lm(d: Path, seed: int = 0) -> Path:
    """GPT-2 (1 layer, width 32) + a word-level fast tokenizer in folder `d`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", "\n", ":", "'", ".", ";", ",", "?"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(vocab), n_positions=256, n_embd=32, n_layer=1, n_head=2,
                     bos_token_id=1, eos_token_id=1)
    GPT2LMHeadModel(cfg).save_pretrained(d)
    fast.save_pretrained(d)
    return d


def write_tiny_blip(d: Path, seed: int = 0) -> Path:
    """BLIP captioning model (1-layer vision and text towers) + processor in folder `d`."""
    import torch
    from transformers import (BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ":", "'", "?", "."] + WORDS))
    tokenizer = BertTokenizerFast(vocab_file=str(d / "vocab.txt"))
    (d / "vocab.txt").unlink()
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    torch.manual_seed(seed)
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    cfg = BlipConfig(text_config={**small, "vocab_size": tokenizer.vocab_size, "bos_token_id": 2, "sep_token_id": 3,
                                  "pad_token_id": 0, "max_position_embeddings": 128},
                     vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=32)
    BlipForConditionalGeneration(cfg).save_pretrained(d)
    processor.save_pretrained(d)
    return d
