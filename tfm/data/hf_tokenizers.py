"""Hugging Face tokenizer files <-> tfm tokenizers that give the ids of the `tokenizers` library.

Reads BERT WordPiece (`tokenizer.json`, or `vocab.txt` + `tokenizer_config.json`) and GPT-2 byte-level BPE
(`vocab.json` + `merges.txt`, or `tokenizer.json`); writes them back as files `transformers` loads. tf-text's
uncased BERT normalization is NFKC case folding ("，" becomes ",") and it splits words at control characters HF
deletes, so WordPiece runs `HFWordPieceTokenizer`: HF's `BertNormalizer` as TF string ops (in-graph) before
tf-text's cased `FastBertTokenizer`, with character tables from `tokenizers` 0.23 (its Unicode is older than
ICU's and RE2's). Options tfm cannot reproduce raise an `InputError` naming the file, the key and the value.
"""

import json
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from tfm.data.byte_pair import END_OF_TEXT, BytePairTokenizer
from tfm.data.tokenizer_base import CONFIG_FILE, Tokenizer
from tfm.data.wordpiece import WordPieceTokenizer
from tfm.errors import InputError

# Characters BertNormalizer(clean_text=True) deletes (Cc except \t\n\r, Cf, Co, U+FFFD in its tables).
_REMOVED = ("0-8 b-c e-1f 7f-9f ad 600-605 61c 6dd 70f 180e 200b-200f 202a-202e 2060-2064 2066-206f e000-f8ff feff "
            "fff9-fffb fffd 110bd 1bca0-1bca3 1d173-1d17a e0001 e0020-e007f f0000-ffffd 100000-10fffd")
# Nonspacing marks (Mn) its strip_accents deletes after NFD.
_MARKS = (
    "300-36f 483-487 591-5bd 5bf 5c1-5c2 5c4-5c5 5c7 610-61a 64b-65f 670 6d6-6dc 6df-6e4 6e7-6e8 6ea-6ed 711 730-74a "
    "7a6-7b0 7eb-7f3 816-819 81b-823 825-827 829-82d 859-85b 8e3-902 93a 93c 941-948 94d 951-957 962-963 981 9bc "
    "9c1-9c4 9cd 9e2-9e3 a01-a02 a3c a41-a42 a47-a48 a4b-a4d a51 a70-a71 a75 a81-a82 abc ac1-ac5 ac7-ac8 acd ae2-ae3 "
    "b01 b3c b3f b41-b44 b4d b56 b62-b63 b82 bc0 bcd c00 c3e-c40 c46-c48 c4a-c4d c55-c56 c62-c63 c81 cbc cbf cc6 "
    "ccc-ccd ce2-ce3 d01 d41-d44 d4d d62-d63 dca dd2-dd4 dd6 e31 e34-e3a e47-e4e eb1 eb4-eb9 ebb-ebc ec8-ecd f18-f19 "
    "f35 f37 f39 f71-f7e f80-f84 f86-f87 f8d-f97 f99-fbc fc6 102d-1030 1032-1037 1039-103a 103d-103e 1058-1059 "
    "105e-1060 1071-1074 1082 1085-1086 108d 109d 135d-135f 1712-1714 1732-1734 1752-1753 1772-1773 17b4-17b5 "
    "17b7-17bd 17c6 17c9-17d3 17dd 180b-180d 18a9 1920-1922 1927-1928 1932 1939-193b 1a17-1a18 1a1b 1a56 1a58-1a5e "
    "1a60 1a62 1a65-1a6c 1a73-1a7c 1a7f 1ab0-1abd 1b00-1b03 1b34 1b36-1b3a 1b3c 1b42 1b6b-1b73 1b80-1b81 1ba2-1ba5 "
    "1ba8-1ba9 1bab-1bad 1be6 1be8-1be9 1bed 1bef-1bf1 1c2c-1c33 1c36-1c37 1cd0-1cd2 1cd4-1ce0 1ce2-1ce8 1ced 1cf4 "
    "1cf8-1cf9 1dc0-1df5 1dfc-1dff 20d0-20dc 20e1 20e5-20f0 2cef-2cf1 2d7f 2de0-2dff 302a-302d 3099-309a a66f "
    "a674-a67d a69e-a69f a6f0-a6f1 a802 a806 a80b a825-a826 a8c4 a8e0-a8f1 a926-a92d a947-a951 a980-a982 a9b3 "
    "a9b6-a9b9 a9bc a9e5 aa29-aa2e aa31-aa32 aa35-aa36 aa43 aa4c aa7c aab0 aab2-aab4 aab7-aab8 aabe-aabf aac1 "
    "aaec-aaed aaf6 abe5 abe8 abed fb1e fe00-fe0f fe20-fe2f 101fd 102e0 10376-1037a 10a01-10a03 10a05-10a06 "
    "10a0c-10a0f 10a38-10a3a 10a3f 10ae5-10ae6 11001 11038-11046 1107f-11081 110b3-110b6 110b9-110ba 11100-11102 "
    "11127-1112b 1112d-11134 11173 11180-11181 111b6-111be 111ca-111cc 1122f-11231 11234 11236-11237 112df 112e3-112ea "
    "11300-11301 1133c 11340 11366-1136c 11370-11374 114b3-114b8 114ba 114bf-114c0 114c2-114c3 115b2-115b5 115bc-115bd "
    "115bf-115c0 115dc-115dd 11633-1163a 1163d 1163f-11640 116ab 116ad 116b0-116b5 116b7 1171d-1171f 11722-11725 "
    "11727-1172b 16af0-16af4 16b30-16b36 16f8f-16f92 1bc9d-1bc9e 1d167-1d169 1d17b-1d182 1d185-1d18b 1d1aa-1d1ad "
    "1d242-1d244 1da00-1da36 1da3b-1da6c 1da75 1da84 1da9b-1da9f 1daa1-1daaf 1e8d0-1e8d6 e0100-e01ef")
# Where tokenizers' character classes differ from ICU's, by which tf-text splits words: HF keeps these inside
# words (tf-text: punctuation or space), so they become a letter no vocabulary has (the word is unknown in both)...
_HF_LETTERS = ("61d 890-891 8e2 9fd a76 c77 c84 1b4e-1b4f 1b7d-1b7f 2e43-2e4f 2e52-2e5d 10d6e 10ead 10f55-10f59 "
               "10f86-10f89 110cd 113d4-113d5 113d7-113d8 1144b-1144f 1145a-1145b 1145d 11660-1166c 116b9 1183b "
               "11944-11946 119e2 11a3f-11a46 11a9a-11a9c 11a9e-11aa2 11b00-11b09 11be1 11c41-11c45 11c70-11c71 "
               "11ef7-11ef8 11f43-11f4f 11fff 12ff1-12ff2 13430-1343f 16d6d-16d6f 16e97-16e9a 16fe2 1e5ff 1e95e-1e95f "
               "2b820-2b91f")  # (2b820-2b91f: HF's Chinese-character range starts at 2b920)
_LETTER = "\ue000"  # private use: clean_text deleted every one from the text; tf-text reads it as a letter
_HF_PUNCTUATION = "166d 111c9"  # ... and HF splits these off (tf-text: letters), so they get spaces around them
ROLES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_BERT_NAMES = {role: f"[{role[:-len('_token')].upper()}]" for role in ROLES}  # "cls_token" -> "[CLS]"
_BERT_CLASSES = ("BertTokenizer", "DistilBertTokenizer", "ElectraTokenizer", "MobileBertTokenizer",
                 "SqueezeBertTokenizer", "LayoutLMTokenizer")  # all BERT's BasicTokenizer + WordPiece
_UNSET_LENGTH = 10 ** 9  # HF writes int(1e30) (VERY_LARGE_INTEGER) when a tokenizer has no maximum length


def _char_class(ranges):
    """RE2 character class of "hex" / "hex-hex" ranges."""
    return "[" + "".join("-".join(f"\\x{{{x}}}" for x in r.split("-")) for r in ranges.split()) + "]"


_REMOVED_CLASS, _MARKS_CLASS = _char_class(_REMOVED), _char_class(_MARKS)
_LETTERS_CLASS, _PUNCTUATION_CLASS = _char_class(_HF_LETTERS), _char_class(_HF_PUNCTUATION)


class HFWordPieceTokenizer(WordPieceTokenizer):
    """WordPiece with Hugging Face's `BertNormalizer` + `BertPreTokenizer` + `WordPiece` semantics, in-graph.

    Normalization (delete control/format/private-use characters; NFD and delete nonspacing marks; lowercase
    character by character, no NFKC) runs as TF string ops; tf-text's cased `FastBertTokenizer` then splits
    words and looks up pieces. Added tokens (`[CLS]`, `[MASK]`, ... written in the text) give their ids, as in
    HF. A word of more than `max_input_chars_per_word` characters is one unknown token: tf-text counts bytes,
    so it runs with 4x the limit in bytes and longer words are folded afterwards.

    Args:
        vocabulary: list of tokens (index = id).
        lowercase: bool.
        strip_accents: bool, or None to follow `lowercase`: NFD, then delete nonspacing marks.
        continuing_subword_prefix: str, "##" for BERT.
        max_input_chars_per_word: int, longer words become the unknown token.
        special_tokens: dict role -> token, roles "unk_token" (required), "sep_token", "pad_token",
            "cls_token", "mask_token"; default BERT's `[UNK]`, `[SEP]`, ... where the vocabulary has them.
        added_tokens: tokens split out of the raw text before normalizing (default: the special tokens).
        model_max_length: int or None, written by `save`.

    Example:
        >>> tok = HFWordPieceTokenizer(["[PAD]", "[UNK]", "[SEP]", "hi", "##s", "!", "，"])
        >>> tok.tokenize(["His，[SEP]!"]).to_list()
        [[3, 4, 6, 2, 5]]
    """

    kind = "wordpiece"  # the same in-graph interface (offsets, word starts, export) as WordPieceTokenizer

    def __init__(self, vocabulary, lowercase=True, strip_accents=None, continuing_subword_prefix="##",
                 max_input_chars_per_word=100, special_tokens=None, added_tokens=None, model_max_length=None):
        Tokenizer.__init__(self)  # not WordPieceTokenizer's: it fixes "[UNK]" and tf-text's normalization
        self._vocabulary = list(vocabulary)
        index = {t: i for i, t in enumerate(self._vocabulary)}
        if special_tokens is None:
            special_tokens = {role: name for role, name in _BERT_NAMES.items() if name in index}
        missing = sorted({t for t in [*special_tokens.values(), *(added_tokens or [])] if t not in index})
        if missing or "unk_token" not in special_tokens:
            raise InputError(f"the WordPiece vocabulary ({len(index)} tokens) lacks {missing or 'an unk_token'}")
        self.special_tokens = dict(special_tokens)
        for role, token in self.special_tokens.items():
            setattr(self, role[:-len("_token")] + "_id", index[token])  # "cls_token" -> self.cls_id
        added = self.special_tokens.values() if added_tokens is None else added_tokens
        self.added_tokens = sorted(set(added), key=lambda t: (-len(t), t))  # longest first: HF's longest match
        self._added_ids = [index[t] for t in self.added_tokens]
        self.lowercase = bool(lowercase)
        self.strip_accents = self.lowercase if strip_accents is None else bool(strip_accents)
        self.suffix = continuing_subword_prefix
        self.max_chars = int(max_input_chars_per_word)
        self.model_max_length = model_max_length
        self._tokenizer = tf_text.FastBertTokenizer(
            vocab=self._vocabulary, suffix_indicator=self.suffix, max_bytes_per_word=4 * self.max_chars,
            token_out_type=tf.int32, unknown_token=self.special_tokens["unk_token"], support_detokenization=True,
            lower_case_nfd_strip_accents=False)
        # NumPy, not tensors: a tensor made while tracing one tf.data graph cannot enter another.
        self._continues = np.array([t.startswith(self.suffix) for t in self._vocabulary])
        chars = [len(t) - len(self.suffix) * c for t, c in zip(self._vocabulary, self._continues)]
        chars[self.unk_id] = 0  # an unknown word is one token already
        self._piece_chars = np.array(chars, np.int64)

    def normalize(self, strings):
        """HF's BertNormalizer on tf.string tensors (tf-text's word splitting isolates Chinese characters)."""
        strings = tf.strings.regex_replace(strings, _REMOVED_CLASS, "")
        if self.strip_accents:
            strings = tf.strings.regex_replace(tf_text.normalize_utf8(strings, "NFD"), _MARKS_CLASS, "")
        if self.lowercase:
            # Rust lowercases character by character; ICU (TF) also makes a final capital sigma "ς", maps U+0130
            # to one character and follows the process locale (Turkish "I"): pre-empt all three.
            for capital, small in (("\u0130", "i\u0307"), ("\u03a3", "\u03c3")):
                strings = tf.strings.regex_replace(strings, capital, small)
            strings = tf.strings.lower(tf.strings.lower(strings), encoding="utf-8")
        strings = tf.strings.regex_replace(strings, _LETTERS_CLASS, _LETTER)
        return tf.strings.regex_replace(strings, f"({_PUNCTUATION_CLASS})", r" \1 ")

    @tf.autograph.experimental.do_not_convert  # Python-only control flow: converting it costs seconds a trace
    def _tokenize(self, strings):
        return self._run(strings, with_offsets=False)[0]

    @tf.autograph.experimental.do_not_convert
    def tokenize_with_offsets(self, strings):
        """Ids plus begin/end byte offsets of each token in the original `(batch,)` tf.string `strings`."""
        return self._run(tf.convert_to_tensor(strings, tf.string), with_offsets=True)

    def _run(self, strings, with_offsets):
        """`(ids, begins, ends)` RaggedTensors `(batch, None)`; offsets None unless `with_offsets`."""
        if self.added_tokens:  # HF splits added tokens out of the raw text first, then tokenizes the rest apart
            pattern = "|".join(_re2_literal(t) for t in self.added_tokens)
            strings = tf.strings.regex_replace(strings, "\\x00", "\x01")  # the split stops at NUL; both get deleted
            pieces, piece_begins, _ = tf_text.regex_split_with_offsets(strings, pattern, pattern)
        else:
            pieces = tf.RaggedTensor.from_tensor(strings[:, tf.newaxis])
            piece_begins = tf.zeros_like(pieces, tf.int64)
        flat = pieces.flat_values
        normalized = self.normalize(flat)
        if self.added_tokens:  # an added token's piece: one letter no vocabulary has, one token to replace
            matches = tf.equal(flat[:, tf.newaxis], tf.constant(self.added_tokens, tf.string))
            is_added = tf.reduce_any(matches, 1)
            normalized = tf.where(is_added, _LETTER, normalized)
        if with_offsets:
            ids, begins, ends = self._tokenizer.tokenize_with_offsets(normalized)
            begins, ends = self._original_offsets(flat, begins, ends)
        else:
            ids, begins, ends = self._tokenizer.tokenize(normalized), None, None
        ids, begins, ends = self._fold_long_words(ids, begins, ends)
        if self.added_tokens:
            piece = ids.value_rowids()
            added = tf.gather(is_added, piece)
            added_ids = tf.gather(tf.constant(self._added_ids, tf.int32), tf.argmax(tf.cast(matches, tf.int32), 1))
            ids = ids.with_flat_values(tf.where(added, tf.gather(added_ids, piece), ids.flat_values))
            if with_offsets:  # the whole piece
                length = tf.gather(tf.cast(tf.strings.length(flat), tf.int64), piece)
                begins = begins.with_flat_values(tf.where(added, tf.zeros_like(length), begins.flat_values))
                ends = ends.with_flat_values(tf.where(added, length, ends.flat_values))
        ids = pieces.with_flat_values(ids).merge_dims(1, 2)
        if not with_offsets:
            return ids, None, None
        shift = tf.gather(piece_begins.flat_values, begins.value_rowids())  # piece offsets -> string offsets
        begins, ends = (pieces.with_flat_values(x.with_flat_values(x.flat_values + shift)).merge_dims(1, 2)
                        for x in (begins, ends))
        return ids, begins, ends

    def _original_offsets(self, texts, begins, ends):
        """Byte offsets in `normalize(texts)` -> in `texts`, from each character's normalized length.

        A token starting (ending) inside a character's normalized form starts (ends) with that character.
        """
        chars, char_begins = tf.strings.unicode_split_with_offsets(texts, "UTF-8")
        char_begins = char_begins.flat_values
        # A character ends where the next begins; a text's last one at the text's end.
        last = chars.row_splits[1:][chars.row_lengths() > 0] - 1
        text_ends = tf.cast(tf.strings.length(texts), tf.int64)[chars.row_lengths() > 0]
        char_ends = tf.tensor_scatter_nd_update(tf.concat([char_begins[1:], [0]], 0), last[:, tf.newaxis], text_ends)
        lengths = tf.cast(tf.strings.length(self.normalize(chars.flat_values)), tf.int64)
        # One sorted array of every character's normalized start across the batch; row r starts at base[r].
        starts = tf.cumsum(lengths, exclusive=True)
        base = tf.gather(tf.concat([starts, [tf.reduce_sum(lengths)]], 0), chars.row_splits[:-1])

        def char_at(offsets, delta):
            position = offsets.flat_values + delta + tf.gather(base, offsets.value_rowids())
            return tf.searchsorted(starts, position, side="right") - 1

        return (begins.with_flat_values(tf.gather(char_begins, char_at(begins, 0))),
                ends.with_flat_values(tf.gather(char_ends, char_at(ends, -1))))

    def _fold_long_words(self, ids, begins, ends):
        """Make each word of more than `max_chars` characters (tf-text found its pieces) one unknown token."""
        flat = ids.flat_values
        starts = tf.logical_not(tf.gather(self._continues, flat))
        word = tf.cumsum(tf.cast(starts, tf.int64)) - 1
        size = tf.size(flat, out_type=tf.int64)
        long = tf.gather(tf.math.unsorted_segment_sum(tf.gather(self._piece_chars, flat), word, size) > self.max_chars,
                         word)
        keep = tf.logical_or(starts, tf.logical_not(long))  # a long word's first piece, which becomes unknown
        lengths = tf.math.unsorted_segment_sum(tf.cast(keep, tf.int64), ids.value_rowids(), ids.nrows())

        def fold(values):
            return tf.RaggedTensor.from_row_lengths(values[keep], lengths, validate=False)

        ids = fold(tf.where(long, tf.cast(self.unk_id, tf.int32), flat))
        if begins is None:
            return ids, None, None
        word_ends = tf.gather(tf.math.unsorted_segment_max(ends.flat_values, word, size), word)
        return ids, fold(begins.flat_values), fold(tf.where(long, word_ends, ends.flat_values))

    def _is_word_start_token(self, token):
        return not token.startswith(self.suffix)

    def save(self, directory):
        """Write the Hugging Face files (`save_hf_tokenizer`), which `load_hf_tokenizer` reads back."""
        return save_hf_tokenizer(self, directory, self.model_max_length)

    @classmethod
    def load(cls, directory):  # = load_hf_tokenizer
        return load_hf_tokenizer(directory)


def _re2_literal(text):
    """An RE2 pattern matching `text` (every character but ASCII letters and digits written as \\x{...})."""
    return "".join(c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):x}}}" for c in text)


# ---- loading ---------------------------------------------------------------------------------------------
def load_hf_tokenizer(directory):
    """The tfm tokenizer of the Hugging Face tokenizer files in `directory`, giving the ids `tokenizers` gives.

    Reads, in this order: a `tokenizer.json` with a "model" (WordPiece or BPE); `vocab.json` + `merges.txt`
    (GPT-2 byte-level BPE; `tokenizer_config.json`'s add_prefix_space); `vocab.txt` (BERT WordPiece;
    `tokenizer_config.json`'s do_lower_case, strip_accents, tokenize_chinese_chars). A directory tfm saved
    itself (its `tokenizer.json` has a "type") goes to `tfm.data.load_tokenizer`. Returns an
    `HFWordPieceTokenizer` or a `tfm.data.BytePairTokenizer`; raises `InputError` for missing files or an option
    tfm cannot reproduce (naming the file, the key and the value).
    """
    directory = Path(directory)
    data = _read_json(directory / CONFIG_FILE)
    if "model" in data:
        return _from_tokenizer_json(directory, data)
    if "type" in data and not (directory / "tokenizer_config.json").exists():
        raise InputError(f"{directory / CONFIG_FILE}: a tfm tokenizer directory, not Hugging Face files; load it "
                         f"with tfm.data.load_tokenizer")
    if (directory / "vocab.json").exists() or (directory / "merges.txt").exists():
        return _gpt2_from_files(directory)
    if (directory / "vocab.txt").exists():
        return _bert_from_files(directory)
    raise InputError(f"{directory}: no Hugging Face tokenizer files (a tokenizer.json with a 'model', vocab.txt, "
                     f"or vocab.json + merges.txt)")


def hf_max_sequence_length(directory):
    """The longest input the checkpoint was set up for, or None: sentence_bert_config.json's max_seq_length
    (sentence-transformers truncates to it), else tokenizer.json's truncation.max_length, else
    tokenizer_config.json's model_max_length; HF's huge "unset" values (int(1e30)) are skipped."""
    directory = Path(directory)
    for value in (_read_json(directory / "sentence_bert_config.json").get("max_seq_length"),
                  (_read_json(directory / CONFIG_FILE).get("truncation") or {}).get("max_length"),
                  _read_json(directory / "tokenizer_config.json").get("model_max_length")):
        if isinstance(value, (int, float)) and 0 < value < _UNSET_LENGTH:
            return int(value)
    return None


def _read_json(path):
    """The JSON object in `path`; {} when there is no such file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    if isinstance(data, dict):
        return data
    raise InputError(f"{path}: expected a JSON object, found {type(data).__name__}")


def _require(path, key, value, allowed):
    if value not in allowed:
        raise InputError(f"{path}: {key} is {value!r}; tfm reproduces only {' or '.join(map(repr, allowed))}")


def _id_list(path, key, vocab):
    """Tokens in id order from a token -> id object whose ids are exactly 0..n-1."""
    if not isinstance(vocab, dict) or not vocab:
        raise InputError(f"{path}: {key} is missing or empty (expected a token -> id object)")
    tokens = [None] * len(vocab)
    for token, i in vocab.items():
        if not isinstance(i, int) or not 0 <= i < len(vocab) or tokens[i] is not None:
            raise InputError(f"{path}: {key} ids must be 0..{len(vocab) - 1} without gaps; found {token!r}: {i!r}")
        tokens[i] = token
    return tokens


def _special_tokens(directory, vocabulary, vocabulary_file, unk_token=None):
    """Role -> token from tokenizer_config.json and special_tokens_map.json (which wins), else BERT's names."""
    found = dict(_BERT_NAMES)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        data = _read_json(directory / name)
        found.update({role: _token_text(data[role]) for role in ROLES if data.get(role) is not None})
    found["unk_token"] = unk_token or found["unk_token"]
    present = set(vocabulary)
    if found["unk_token"] not in present:
        raise InputError(f"{vocabulary_file}: no unknown token {found['unk_token']!r} in the vocabulary")
    return {role: token for role, token in found.items() if token in present}


def _token_text(value):
    return value.get("content") if isinstance(value, dict) else value  # a str, or an AddedToken's dict


def _from_tokenizer_json(directory, data):
    path, model = directory / CONFIG_FILE, data["model"] or {}
    if model.get("type", "BPE" if "merges" in model else None) == "BPE":
        return _bpe_from_json(path, data, model)
    _require(path, "model.type", model.get("type"), ["WordPiece", "BPE"])
    normalizer = data.get("normalizer") or {}
    _require(path, "normalizer.type", normalizer.get("type"), ["BertNormalizer"])
    for key in ("clean_text", "handle_chinese_chars"):
        _require(path, f"normalizer.{key}", normalizer.get(key, True), [True])
    _require(path, "pre_tokenizer.type", (data.get("pre_tokenizer") or {}).get("type"), ["BertPreTokenizer"])
    vocabulary = _id_list(path, "model.vocab", model.get("vocab"))
    added = []
    for token in data.get("added_tokens") or []:
        content, i = token.get("content"), token.get("id")
        if not (isinstance(i, int) and 0 <= i < len(vocabulary) and vocabulary[i] == content):
            raise InputError(f"{path}: added token {content!r} (id {i!r}) is not model.vocab's token {i!r}; tfm's "
                             f"WordPiece needs every added token in the vocabulary")
        for key in ("single_word", "normalized"):
            _require(path, f"added_tokens[{content!r}].{key}", bool(token.get(key)), [False])
        added.append(content)
    return HFWordPieceTokenizer(
        vocabulary, bool(normalizer.get("lowercase", True)), normalizer.get("strip_accents"),
        continuing_subword_prefix=model.get("continuing_subword_prefix") or "##",
        max_input_chars_per_word=model.get("max_input_chars_per_word") or 100,
        special_tokens=_special_tokens(directory, vocabulary, path, model.get("unk_token")), added_tokens=added,
        model_max_length=hf_max_sequence_length(directory))


def _bpe_from_json(path, data, model):
    _require(path, "normalizer", data.get("normalizer"), [None])
    pre_tokenizer = data.get("pre_tokenizer") or {}
    _require(path, "pre_tokenizer.type", pre_tokenizer.get("type"), ["ByteLevel"])
    _require(path, "pre_tokenizer.use_regex", pre_tokenizer.get("use_regex", True), [True])
    for key in ("dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "byte_fallback",
                "ignore_merges"):
        _require(path, f"model.{key}", model.get(key) or None, [None])
    _id_list(path, "model.vocab", model.get("vocab"))
    others = [t.get("content") for t in data.get("added_tokens") or [] if t.get("content") != END_OF_TEXT]
    if others:
        raise InputError(f"{path}: added_tokens {others[:5]}: tfm's BPE splits only {END_OF_TEXT!r} out of text")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return BytePairTokenizer(model["vocab"], merges, add_prefix_space=bool(pre_tokenizer.get("add_prefix_space")))


def _tokenizer_config(directory, classes):
    """tokenizer_config.json's path and contents, its tokenizer_class (if any) one of `classes` (or "...Fast")."""
    config = _read_json(path := directory / "tokenizer_config.json")
    _require(path, "tokenizer_class", config.get("tokenizer_class", classes[0]).removesuffix("Fast"), classes)
    return path, config


def _gpt2_from_files(directory):
    for name in ("vocab.json", "merges.txt"):
        if not (directory / name).exists():
            raise InputError(f"{directory / name}: no such file (a GPT-2 BPE needs vocab.json and merges.txt)")
    config_path, config = _tokenizer_config(directory, ["GPT2Tokenizer"])
    for role in ("bos_token", "eos_token", "unk_token", "pad_token"):  # the only token split out of text
        _require(config_path, role, _token_text(config.get(role)) or END_OF_TEXT, [END_OF_TEXT])
    vocabulary = _id_list(directory / "vocab.json", "the vocabulary", _read_json(directory / "vocab.json"))
    return BytePairTokenizer({t: i for i, t in enumerate(vocabulary)}, directory / "merges.txt",
                             add_prefix_space=bool(config.get("add_prefix_space")))


def _bert_from_files(directory):
    config_path, config = _tokenizer_config(directory, _BERT_CLASSES)
    for key in ("tokenize_chinese_chars", "do_basic_tokenize"):
        _require(config_path, key, config.get(key, True), [True])
    vocabulary = (directory / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return HFWordPieceTokenizer(vocabulary, bool(config.get("do_lower_case", True)), config.get("strip_accents"),
                                special_tokens=_special_tokens(directory, vocabulary, directory / "vocab.txt"),
                                model_max_length=hf_max_sequence_length(directory))


# ---- saving ----------------------------------------------------------------------------------------------
def save_hf_tokenizer(tokenizer, directory, model_max_length=None):
    """Write `tokenizer` as files `transformers.AutoTokenizer` and `tokenizers.Tokenizer.from_file` load; the Path.

    WordPiece: vocab.txt, tokenizer_config.json (BertTokenizer), special_tokens_map.json and tokenizer.json
    (BertNormalizer, BertPreTokenizer, `[CLS] $A [SEP]` template). A tfm-trained `WordPieceTokenizer` becomes
    the BERT tokenizer of its casing (HF then skips tf-text's NFKC folding of e.g. full-width forms).
    BPE: vocab.json, merges.txt, tokenizer_config.json (GPT2Tokenizer), special_tokens_map.json, tokenizer.json.

    Args:
        tokenizer: `HFWordPieceTokenizer`, `tfm.data.WordPieceTokenizer` or `tfm.data.BytePairTokenizer`.
        directory: path, created when missing.
        model_max_length: int or None, written to tokenizer_config.json.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(tokenizer, WordPieceTokenizer):
        config, specials, data = _wordpiece_files(tokenizer, directory)
    elif isinstance(tokenizer, BytePairTokenizer):
        config, specials, data = _bpe_files(tokenizer, directory)
    else:
        raise TypeError(f"save_hf_tokenizer writes WordPiece and BPE tokenizers, not {type(tokenizer).__name__}")
    if model_max_length is not None:
        config["model_max_length"] = int(model_max_length)
    for name, value in (("tokenizer_config.json", config), ("special_tokens_map.json", specials), (CONFIG_FILE, data)):
        (directory / name).write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return directory


def _added_entry(i, token, special=True):
    return dict(id=i, content=token, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special)


def _wordpiece_files(tokenizer, directory):
    vocabulary = tokenizer.vocabulary
    index = {t: i for i, t in enumerate(vocabulary)}
    hf = isinstance(tokenizer, HFWordPieceTokenizer)
    if hf:
        specials, added, prefix = dict(tokenizer.special_tokens), tokenizer.added_tokens, tokenizer.suffix
        strip, max_chars = tokenizer.strip_accents, tokenizer.max_chars
    else:  # tfm's own: BERT's token names, "##", tf-text's 100-byte word limit
        specials = {role: name for role, name in _BERT_NAMES.items() if name in index}
        added, prefix, strip, max_chars = list(specials.values()), "##", tokenizer.lowercase, 100
    lowercase = tokenizer.lowercase
    strip = None if strip == lowercase else strip  # None: follow lowercase, as HF writes it
    (directory / "vocab.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase, "strip_accents": strip,
              "tokenize_chinese_chars": True, "do_basic_tokenize": True, "never_split": None,
              "clean_up_tokenization_spaces": True, **specials}
    cls, sep, post = specials.get("cls_token"), specials.get("sep_token"), None
    if cls and sep:
        a, b = {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}
        cls0, sep0, sep1 = ({"SpecialToken": {"id": t, "type_id": n}} for t, n in ((cls, 0), (sep, 0), (sep, 1)))
        post = {"type": "TemplateProcessing", "single": [cls0, a, sep0], "pair": [cls0, a, sep0, b, sep1],
                "special_tokens": {t: {"id": t, "ids": [index[t]], "tokens": [t]} for t in (cls, sep)}}
    data = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [_added_entry(index[t], t, t in specials.values()) for t in sorted(added, key=index.get)],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": strip, "lowercase": lowercase},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": post,
        "decoder": {"type": "WordPiece", "prefix": prefix, "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": specials["unk_token"], "continuing_subword_prefix": prefix,
                  "max_input_chars_per_word": max_chars, "vocab": index},
    }
    return config, specials, data


def _bpe_files(tokenizer, directory):
    vocab = {t: i for i, t in enumerate(tokenizer.vocabulary)}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(tokenizer.merges) + "\n", encoding="utf-8")
    prefix_space = tokenizer.add_prefix_space
    specials = {role: END_OF_TEXT for role in ("bos_token", "eos_token", "unk_token")} if END_OF_TEXT in vocab else {}
    config = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": prefix_space, "add_bos_token": False,
              "errors": "replace", "clean_up_tokenization_spaces": False, **specials}
    byte_level = {"type": "ByteLevel", "add_prefix_space": prefix_space, "trim_offsets": True, "use_regex": True}
    data = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [_added_entry(vocab[END_OF_TEXT], END_OF_TEXT)] if specials else [],
        "normalizer": None, "pre_tokenizer": byte_level, "post_processor": {**byte_level, "trim_offsets": False},
        "decoder": {**byte_level, "add_prefix_space": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": list(tokenizer.merges)},
    }
    return config, specials, data
