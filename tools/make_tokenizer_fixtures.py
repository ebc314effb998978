#!/usr/bin/env python3
"""Tokenizer and chat-template fixtures, for mpk's text tests (tests/run-text.sh).

Trains small byte-level BPE tokenizers with HF `tokenizers`, using the exact
pre-tokenizers of Llama 3 and Qwen2 (their Split regexes, from the models'
tokenizer.json), and records what HF computes with them, so that `make check`
can hold mpk's native tokenizer and chat rendering to HF without Python.

    pip install tokenizers jinja2 transformers   # no torch needed
    python3 tools/make_tokenizer_fixtures.py      # from the repository root

It writes:

  tests/data/tok-cases/NAME.txt     the corpus, one case per file (UTF-8)
  tests/data/tok-cases/*.bin        raw bytes that are not UTF-8 (not given to
                                    HF, which takes Python str; mpk's byte-level
                                    round trip is checked on them instead)
  tests/data/tok-chat/NAME.json     conversations ([{role, content}, ...])
  tests/data/tok-llama3/, tok-qwen2/
      tokenizer.json, tokenizer_config.json (with the real chat_template of
      Llama-3-8B-Instruct and of Qwen2-7B-Instruct), generation_config.json
      expect/NAME.ids     HF encode(text) ids (add_special_tokens=True), one line
      expect/NAME.raw.ids the same with add_special_tokens=False
      expect/NAME.dec     HF decode(ids, skip_special_tokens=False) of NAME.ids
      expect/NAME.chat.txt  apply_chat_template(conv, tokenize=False,
                            add_generation_prompt=True)
      expect/NAME.chat.ids  the same, tokenized (as apply_chat_template does:
                            add_special_tokens=False)
  tests/data/tok-hostile/NAME.tokenizer.json, NAME.tokenizer_config.json
      broken files (made by hand here, no training), with NAME.expect: the
      message mpk must give ("# PATTERN"); --hostile-only writes just these
  tests/data/qwen3-tiny/, llama-tiny/: tokenizer.json and tokenizer_config.json
      of the same two kinds, trained to fit those models' vocabularies (640,
      512), so that mpk-run --prompt can be tried on them.

The training is deterministic for a given tokenizers version; the outputs are
committed, so the tests never need this script.
"""
import json
import os
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors, trainers

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Meta-Llama-3-8B-Instruct's tokenizer_config.json chat_template.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

# Qwen2-7B-Instruct's tokenizer_config.json chat_template.
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

CASES = {
    "english": "The quick brown fox jumps over the lazy dog. It's 9 o'clock; "
               "we'd better go -- you're late, THEY'LL wait, I'M sure, she'S here.\n",
    "code": "def f(x):\n\tif x > 0:\n\t\treturn x ** 2  # square\n    return -x\n\n"
            "int main(void) { for (int i = 0; i < 10; i++) printf(\"%d\\n\", i); }\r\n",
    "digits": "1 12 123 1234 12345 123456 1234567 3.14159265358979 2024-01-01T12:34:56Z "
              "0000000000 +44 (0)20 7946 0958 1e-6 0x7fffffff ١٢٣ ٤٥٦",
    "whitespace": "a  b   c    d\t\te\n\nf\n\n\n  \n g   \r\n\r\n h\u00a0\u00a0i\u3000j\u2028k \u200bl  ",
    "leading-spaces": "   leading and trailing   ",
    "cjk": "日本語のテキストです。中文分词测试，漢字とかな。한국어 문장도 있습니다.",
    "emoji": "👍🏽 good 👨‍👩‍👧 family 🇫🇷🇯🇵 flags 😀😀😀 ❤️ ✔︎",
    "combining": "e\u0301 Ame\u0301lie cafe\u0301 A\u030a \u00c5 \u212b n\u0303 \u1e9b\u0323 "
                 "q\u0307\u0323 \ufb01x \u0915\u094d\u0937",
    "special-llama3": "<|begin_of_text|>hi<|eot_id|> text <|start_header_id|>user<|end_header_id|>\n\n"
                      "x<|eot_id|><|python_tag|> <|end_of_text|>",
    "special-qwen2": "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n<tool_call>x"
                     "</tool_call> [[note]] <|endoftext|>end",
    "mixed": "x=1;y=22;z=333\r\nend\n\"quoted\" 'single' (parens) [brackets] {braces} <angle> "
             "foo_bar-baz.qux/quux\\corge @user #tag $5.00 50% a&b |pipe| ~tilde` ^caret",
    "long-word": "Pneumonoultramicroscopicsilicovolcanoconiosis " + "abc" * 200 + " " + "!" * 300,
    "empty": "",
    "space": " ",
    "newlines": "\n\n\n",
}

# Not UTF-8: HF never sees these (a Python str cannot hold them).
RAW_CASES = {
    "invalid": b"ok \xff\xfe bad \xc3 lone lead, \xe2\x82 cut, \xed\xa0\x80 surrogate, "
               b"\xf4\x90\x80\x80 too big, \xc0\xaf overlong \x80\x80 end\xe6\x97",
}

CHATS = {
    "one-turn": [{"role": "user", "content": "Hello! Who are you?"}],
    "system": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "  And 3+3?  \n"},
    ],
    "multi-turn": [
        {"role": "user", "content": "Translate 'cat' to French."},
        {"role": "assistant", "content": "chat"},
        {"role": "user", "content": "And to Japanese? 日本語で"},
        {"role": "assistant", "content": "猫 (ねこ) 🐈"},
        {"role": "user", "content": "Thanks!\n\nBye."},
    ],
}

TRAIN_TEXT = """\
Language models read text as tokens. A tokenizer splits the text into pieces,
and each piece becomes an id. Byte-level BPE starts from the 256 bytes and
merges the most frequent pairs, so that any text, in any language, can be
encoded without unknown tokens. The quick brown fox jumps over the lazy dog.
She said: "It's not what you think; we'll see what they'd do." I'm sure you're
right, and they've been there. Numbers like 1, 22, 333, 4444 and 3.14 appear
in prose, dates like 2024-06-30, and times like 12:45.
def tokenize(text):
    for piece in regex.findall(text):
        yield from bpe(piece.encode("utf-8"))

int main(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        printf("%s\\n", argv[i]);
    return 0;
}
日本語の文章を分割します。中文文本也需要分词。漢字、ひらがな、カタカナ。
한국어 텍스트도 포함합니다. Ελληνικά και русский текст тоже.
Emoji: 😀 😃 😄 👍 👍🏽 ❤️ 🇫🇷 🎉 and café, naïve, Amélie, Ångström.
"""


def corpus():
    lines = TRAIN_TEXT.splitlines(keepends=True)
    for k in range(40):
        for i, line in enumerate(lines):
            yield line if k % 3 else line.upper() if i % 5 == 0 else line
        yield " ".join(str(k * j) for j in range(1, 30)) + "\n"
    for text in CASES.values():
        yield text


def train(kind, vocab_size):
    """A byte-level BPE tokenizer of Llama 3's or Qwen2's kind."""
    if kind == "llama3":
        tok = Tokenizer(models.BPE(ignore_merges=True))
        regex = LLAMA3_REGEX
    else:
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.NFC()
        regex = QWEN2_REGEX
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    # The special tokens after the learned vocabulary, as in the real models.
    if kind == "llama3":
        tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"])
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                          pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                          special_tokens=[("<|begin_of_text|>", bos)]),
        ])
    else:
        tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=False),
                        AddedToken("</tool_call>", special=False, normalized=False),
                        AddedToken("[[note]]", special=False, normalized=True)])
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def tokenizer_config(kind):
    if kind == "llama3":
        return {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                "model_max_length": 8192, "tokenizer_class": "PreTrainedTokenizerFast",
                "clean_up_tokenization_spaces": True, "chat_template": LLAMA3_TEMPLATE}
    return {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
            "model_max_length": 32768, "tokenizer_class": "Qwen2Tokenizer",
            "clean_up_tokenization_spaces": False, "chat_template": QWEN2_TEMPLATE}


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def save(tok, kind, d):
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "tokenizer.json")
    tok.save(path)
    if kind == "llama3":
        # Llama 3's own tokenizer.json has merges in the older "a b" form
        # (Qwen2's newer ones, like what tokenizers writes, ["a", "b"]):
        # the fixtures cover both.
        with open(path, encoding="utf-8") as f:
            t = json.load(f)
        t["model"]["merges"] = [" ".join(m) for m in t["model"]["merges"]]
        write(path, json.dumps(t, indent=2, ensure_ascii=False) + "\n")
    write(os.path.join(d, "tokenizer_config.json"), json.dumps(tokenizer_config(kind), indent=2) + "\n")


def ids_line(ids):
    return " ".join(map(str, ids)) + "\n"


def record(kind, d):
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    cfg = tokenizer_config(kind)
    fast = PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"),
                                   bos_token=cfg["bos_token"], eos_token=cfg["eos_token"])
    fast.chat_template = cfg["chat_template"]
    ex = os.path.join(d, "expect")
    for name, text in CASES.items():
        ids = tok.encode(text).ids
        write(os.path.join(ex, name + ".ids"), ids_line(ids))
        write(os.path.join(ex, name + ".raw.ids"), ids_line(tok.encode(text, add_special_tokens=False).ids))
        write(os.path.join(ex, name + ".dec"), tok.decode(ids, skip_special_tokens=False))
    for name, conv in CHATS.items():
        text = fast.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        write(os.path.join(ex, name + ".chat.txt"), text)
        ids = tok.encode(text, add_special_tokens=False).ids
        write(os.path.join(ex, name + ".chat.ids"), ids_line(ids))


def bytes_to_unicode():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def hostile():
    """Broken tokenizer.json and tokenizer_config.json files, each with the
    message mpk must give (tests/data/tok-hostile/NAME.expect: "# PATTERN")."""
    d = "tests/data/tok-hostile"
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    vocab["\u0120t"] = 256

    def base():
        return {"version": "1.0", "added_tokens": [{"id": 257, "content": "<|x|>", "special": True}],
                "normalizer": None,
                "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
                "post_processor": None, "decoder": {"type": "ByteLevel"},
                "model": {"type": "BPE", "vocab": dict(vocab), "merges": [["\u0120", "t"]]}}

    def case(name, pattern, edit=None, text=None):
        t = base()
        if edit:
            edit(t)
        write(f"{d}/{name}.tokenizer.json", text if text is not None else json.dumps(t))
        write(f"{d}/{name}.expect", f"# {pattern}\n")

    def cfg(name, pattern, data):
        write(f"{d}/{name}.tokenizer_config.json", data if isinstance(data, str) else json.dumps(data))
        write(f"{d}/{name}.expect", f"# {pattern}\n")

    m = lambda **kw: (lambda t: t["model"].update(kw))
    top = lambda **kw: (lambda t: t.update(kw))
    case("not-json", "invalid JSON", text="{\"model\": ")
    case("top-list", "the top level must be an object", text="[]")
    case("unigram", "tokenizer model type Unigram is not supported", m(type="Unigram"))
    case("wordpiece", "tokenizer model type WordPiece is not supported", m(type="WordPiece"))
    case("no-model", "model must be an object", top(model=7))
    case("bad-regex", "the regex does not compile", top(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(\\p{L}"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "use_regex": False}]}))
    case("bad-behavior", "behavior must be one of", top(pre_tokenizer={"type": "Split", "pattern": {"Regex": "a"},
                                                                        "behavior": "Sideways"}))
    case("merge-oov", "merges\\[0\\].*is not in model.vocab", m(merges=[["\u0120", "qq"]]))
    case("merge-unmerged", "the merged token is not in model.vocab", m(merges=[["a", "b"]]))
    case("merge-string", "is not two tokens separated by one space", m(merges=["abc"]))
    case("merge-number", "merges\\[0\\] must be", m(merges=[5]))
    case("merges-missing", "model.merges must be a list", m(merges=None))
    case("vocab-negative", "must be a token id from 0", m(vocab={"a": -1}))
    case("vocab-huge", "must be a token id from 0", m(vocab={"a": 10 ** 12}))
    case("vocab-string-id", "must be a token id from 0", m(vocab={"a": "1"}))
    case("vocab-dup-id", "id 0 is given to two tokens", m(vocab={"a": 0, "b": 0}))
    case("vocab-list", "model.vocab must be an object", m(vocab=[]))
    case("no-pretok", "pre_tokenizer: none given", top(pre_tokenizer=None))
    case("metaspace", 'pre-tokenizer type "Metaspace" is not supported', top(pre_tokenizer={"type": "Metaspace"}))
    case("no-bytelevel", "no ByteLevel pre-tokenizer", top(pre_tokenizer={"type": "Split", "pattern": {"String": " "},
                                                                          "behavior": "Removed"}))
    case("lowercase", 'normalizer type "Lowercase" is not supported', top(normalizer={"type": "Lowercase"}))
    case("normalizer-list", "normalizer must be an object", top(normalizer=[1]))
    case("decoder-wordpiece", 'decoder type "WordPiece" is not supported', top(decoder={"type": "WordPiece"}))
    case("no-decoder", "decoder: none given", top(decoder=None))
    case("added-empty", 'non-empty "content"', top(added_tokens=[{"id": 3, "content": ""}]))
    case("added-flag", "added_tokens\\[0\\].special must be true or false",
         top(added_tokens=[{"id": 3, "content": "x", "special": "yes"}]))
    case("byte-fallback", "byte_fallback is true", m(byte_fallback=True))
    case("dropout", "dropout is 0.1", m(dropout=0.1))
    case("template-missing", "id 9999 is not a token", top(post_processor={
        "type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "B"}}, {"Sequence": {"id": "A"}}],
        "special_tokens": {"B": {"id": "B", "ids": [9999], "tokens": ["B"]}}}))
    case("bert-post", 'post-processor type "BertProcessing" is not supported',
         top(post_processor={"type": "BertProcessing"}))
    case("unk-missing", "unk_token.*is not in model.vocab", m(unk_token="<unk>"))
    cfg("cfg-not-json", "invalid JSON", "{'chat_template': 1}")
    cfg("cfg-list", "the top level must be an object", "[]")
    cfg("cfg-unknown", "neither ChatML", {"chat_template": "{{ messages[0]['content'] }}"})
    cfg("cfg-number", '"chat_template" must be a string', {"chat_template": 3})
    cfg("cfg-none", 'no "chat_template"', {"bos_token": "<s>"})
    cfg("cfg-bos", '"bos_token" must be a string', {"bos_token": 5, "chat_template": LLAMA3_TEMPLATE})
    cfg("cfg-list-nodefault", 'no template named "default"', {"chat_template": [{"name": "tool_use",
                                                                                "template": "x"}]})
    cfg("cfg-llama31", "Llama 3.1-style", {"chat_template": "<|start_header_id|>system<|end_header_id|>"
                                           "Cutting Knowledge Date: December 2023<|eot_id|>"})


def main():
    if not os.path.isdir("tests/data"):
        sys.exit("run from the repository root")
    hostile()
    if len(sys.argv) > 1 and sys.argv[1] == "--hostile-only":
        return
    for name, text in CASES.items():
        write(f"tests/data/tok-cases/{name}.txt", text)
    for name, data in RAW_CASES.items():
        write(f"tests/data/tok-cases/{name}.bin", data)
    for name, conv in CHATS.items():
        write(f"tests/data/tok-chat/{name}.json", json.dumps(conv, indent=1, ensure_ascii=False) + "\n")
    gen = {
        "llama3": {"bos_token_id": None, "eos_token_id": None, "do_sample": True,
                   "temperature": 0.6, "top_p": 0.9, "max_new_tokens": 64},
        "qwen2": {"bos_token_id": None, "pad_token_id": None, "eos_token_id": None, "do_sample": True,
                  "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05},
    }
    for kind, vocab in (("llama3", 1200), ("qwen2", 1200)):
        d = f"tests/data/tok-{kind}"
        tok = train(kind, vocab)
        save(tok, kind, d)
        g = dict(gen[kind])
        eos = ["<|end_of_text|>", "<|eot_id|>"] if kind == "llama3" else ["<|im_end|>", "<|endoftext|>"]
        g["eos_token_id"] = [tok.token_to_id(t) for t in eos]
        if kind == "llama3":
            g["bos_token_id"] = tok.token_to_id("<|begin_of_text|>")
        write(os.path.join(d, "generation_config.json"), json.dumps(g, indent=2) + "\n")
        record(kind, d)
    # For the tiny models: the vocabulary (learned + special) must fit.
    save(train("qwen2", 640 - 6), "qwen2", "tests/data/qwen3-tiny")
    save(train("llama3", 512 - 6), "llama3", "tests/data/llama-tiny")


if __name__ == "__main__":
    main()
