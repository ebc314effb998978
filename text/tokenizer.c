/*
 * tokenizer.c - byte-level BPE from a Hugging Face tokenizer.json.
 *
 * Encoding runs the stages of HF tokenizers' TokenizerImpl::encode, in order:
 *
 *   added tokens    the text is split at the added tokens (special or not),
 *                   leftmost-longest, those with "normalized": false first on
 *                   the raw text; each match is one id
 *   normalizer      each piece between them: NFC (utf8proc), or a Sequence
 *                   of NFC/NFD/NFKC/NFKD; then the "normalized": true added
 *                   tokens are split out of it
 *   pre-tokenizer   Split (PCRE2 with UTF and UCP: the model's regex),
 *                   ByteLevel (GPT-2's regex when use_regex), a Sequence
 *   BPE             each pre-token's bytes, merged pair by pair, lowest rank
 *                   first and leftmost among equals (HF's Word::merge_all);
 *                   with ignore_merges a pre-token in the vocabulary is one
 *                   id; results are cached per pre-token
 *   post-processor  TemplateProcessing's tokens around the text (BOS)
 *
 * ByteLevel maps each byte to a printable character; this file keys the
 * vocabulary by the bytes instead, so BPE runs on the bytes themselves and
 * decoding is a lookup. A vocabulary entry with a character outside the
 * byte alphabet decodes to its UTF-8, as HF's ByteLevel decoder does.
 *
 * Invalid UTF-8 cannot reach HF (Python str); here it is not normalised,
 * never matches a regex item (PCRE2_MATCH_INVALID_UTF), and so becomes its
 * own pre-token, encoded byte by byte: decoding gives the bytes back.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text.h"

#include "mpk/util.h"

#include <jansson.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

enum { MAX_TOKENIZER = 256 << 20, MAX_IDS = 1 << 24, MAX_PRE = 16, CACHE_MAX = 1 << 17 };

/* GPT-2's pre-tokenizer regex: ByteLevel with use_regex. */
static const char gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

typedef enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_PREV, SPLIT_NEXT, SPLIT_CONTIGUOUS } split_behavior;

typedef struct {
    bool bytelevel;      /* else Split */
    bool prefix_space;   /* ByteLevel add_prefix_space */
    bool invert;         /* Split */
    split_behavior behavior;
    pcre2_code *re;      /* NULL: ByteLevel without use_regex */
} pretok;

typedef struct {
    char *s;
    size_t n;
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
} added;

typedef struct {
    uint32_t off, len;   /* what the token decodes to, in T->bytes */
    uint32_t koff, klen; /* its vocabulary entry's bytes (the BPE key) */
    bool present, special, bytelevel;
} entry;

typedef struct {
    uint32_t h;
    int32_t id; /* -1: empty */
} vslot;

typedef struct {
    uint64_t key; /* a << 32 | b; 0 with rank UINT32_MAX: empty */
    uint32_t rank;
    int32_t id;
} pslot;

typedef struct {
    uint32_t h, koff, klen, voff, vlen; /* klen UINT32_MAX: empty */
} cslot;

struct mpk_tok {
    char *name;
    uint32_t nids;
    entry *e;           /* [nids] */
    char *bytes;        /* every token's bytes */
    size_t nbytes, bytescap;
    vslot *vocab;       /* bytes -> id, for BPE; [vcap] */
    size_t vcap;
    pslot *pairs;       /* (a, b) -> (rank, merged id); [pcap] */
    size_t pcap;
    int32_t byte_id[256];
    int32_t unk;
    bool fuse_unk, ignore_merges;
    int nnorm;
    utf8proc_option_t norm[8];
    int npre;
    pretok pre[MAX_PRE];
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    added *add;
    size_t nadd;
    int32_t *prefix, *suffix; /* TemplateProcessing's single */
    size_t nprefix, nsuffix;
    /* The BPE cache: pre-token bytes -> ids. */
    cslot *cache;
    size_t ccap, cn;
    char *ckeys;
    size_t cklen, ckcap;
    mpk_ids cvals;
    /* Scratch for one word. */
    struct sym { int32_t c; int prev, next; uint32_t len; } *sym;
    struct merge { uint32_t rank; int pos; } *heap;
    size_t symcap, heapcap;
};

/* ---- messages ----------------------------------------------------------- */

/* A value for a message, shortened. */
#define SHOW(v) mpk_text_show((v), (char[64]){0}, 64)

/* ---- hashing ------------------------------------------------------------ */

static uint32_t hash_bytes(const char *s, size_t n) { return (uint32_t)mpk_fnv1a(MPK_FNV_INIT, s, n); }

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33, x *= 0xff51afd7ed558ccdULL, x ^= x >> 33, x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

static int32_t vocab_get(const mpk_tok *T, const char *s, size_t n)
{
    uint32_t h = hash_bytes(s, n);
    for (size_t i = h & (T->vcap - 1);; i = (i + 1) & (T->vcap - 1)) {
        const vslot *v = &T->vocab[i];
        if (v->id < 0)
            return -1;
        const entry *e = &T->e[v->id];
        if (v->h == h && e->klen == n && memcmp(T->bytes + e->koff, s, n) == 0)
            return v->id;
    }
}

/* false: the bytes are in the map already (under *dup). */
static bool vocab_put(mpk_tok *T, int32_t id, int32_t *dup)
{
    const entry *e = &T->e[id];
    const char *s = T->bytes + e->koff;
    uint32_t h = hash_bytes(s, e->klen);
    size_t i = h & (T->vcap - 1);
    for (; T->vocab[i].id >= 0; i = (i + 1) & (T->vcap - 1)) {
        const entry *o = &T->e[T->vocab[i].id];
        if (T->vocab[i].h == h && o->klen == e->klen && memcmp(T->bytes + o->koff, s, e->klen) == 0) {
            *dup = T->vocab[i].id;
            return false;
        }
    }
    T->vocab[i] = (vslot){h, id};
    return true;
}

static const pslot *pair_get(const mpk_tok *T, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t i = mix64(key) & (T->pcap - 1);; i = (i + 1) & (T->pcap - 1)) {
        const pslot *p = &T->pairs[i];
        if (p->rank == UINT32_MAX)
            return NULL;
        if (p->key == key)
            return p;
    }
}

/* The first merge of a pair wins, as in HF (a later duplicate is unused). */
static void pair_put(mpk_tok *T, int32_t a, int32_t b, uint32_t rank, int32_t id)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = mix64(key) & (T->pcap - 1);
    for (; T->pairs[i].rank != UINT32_MAX; i = (i + 1) & (T->pcap - 1))
        if (T->pairs[i].key == key)
            return;
    T->pairs[i] = (pslot){key, rank, id};
}

/* ---- the byte alphabet -------------------------------------------------- */

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the
 * others for 256, 257, ... in byte order. */
static int32_t byte_char[256];
static int16_t char_byte[324];

static void init_bytelevel(void)
{
    if (byte_char['!'])
        return;
    int k = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        byte_char[b] = printable ? b : 256 + k++;
    }
    for (int c = 0; c < 324; c++)
        char_byte[c] = -1;
    for (int b = 0; b < 256; b++)
        char_byte[byte_char[b]] = (int16_t)b;
}

/* A token's text to its bytes: each character of the byte alphabet is its
 * byte; any other character makes the whole token its UTF-8 (as HF's
 * ByteLevel decoder does). *bl: it was all byte alphabet. out holds at
 * least n bytes. */
static size_t unbyte(const char *s, size_t n, char *out, bool *bl)
{
    size_t k = 0;
    *bl = true;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t m = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
        if (m <= 0 || c >= 324 || char_byte[c] < 0) {
            *bl = false;
            memcpy(out, s, n);
            return n;
        }
        out[k++] = (char)char_byte[c];
        i += (size_t)m;
    }
    return k;
}

/* ---- reading tokenizer.json --------------------------------------------- */

typedef struct {
    const char *name;
    FILE *err;
    mpk_tok *T;
} rd;

#define BAD(r, ...) mpk_text_bad((r)->name, (r)->err, __VA_ARGS__)

static json_t *get(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_null(v) ? NULL : v;
}

static bool get_flag(const rd *r, json_t *o, const char *where, const char *key, bool *out)
{
    json_t *v = get(o, key);
    if (v && !json_is_boolean(v))
        return BAD(r, "%s.%s must be true or false, not %s", where, key, SHOW(v));
    *out = v && json_is_true(v);
    return true;
}

static const char *type_of(json_t *o)
{
    json_t *t = json_object_get(o, "type");
    return json_is_string(t) ? json_string_value(t) : NULL;
}

static bool compile_regex(const rd *r, const char *where, const char *pat, size_t n, pcre2_code **out)
{
    int ec;
    PCRE2_SIZE eo;
    *out = pcre2_compile((PCRE2_SPTR)pat, n, PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &ec, &eo, NULL);
    if (!*out) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return BAD(r, "%s: the regex does not compile at offset %zu: %s", where, (size_t)eo, (char *)msg);
    }
    pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE); /* the interpreter if no JIT */
    return true;
}

static bool read_normalizer(const rd *r, json_t *n, const char *where, int depth)
{
    mpk_tok *T = r->T;
    const char *type = type_of(n);
    if (!json_is_object(n) || !type)
        return BAD(r, "%s must be an object with a \"type\", not %s", where, SHOW(n));
    if (strcmp(type, "Sequence") == 0 && depth == 0) {
        json_t *list = json_object_get(n, "normalizers"), *x;
        size_t i;
        if (!json_is_array(list))
            return BAD(r, "%s.normalizers must be a list, not %s", where, SHOW(list));
        json_array_foreach(list, i, x) {
            char w[64];
            snprintf(w, sizeof w, "%s.normalizers[%zu]", where, i);
            if (!read_normalizer(r, x, w, depth + 1))
                return false;
        }
        return true;
    }
    static const struct { const char *name; utf8proc_option_t opt; } forms[] = {
        {"NFC", UTF8PROC_STABLE | UTF8PROC_COMPOSE},
        {"NFD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE},
        {"NFKC", UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT},
        {"NFKD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT},
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++)
        if (strcmp(type, forms[i].name) == 0) {
            if (T->nnorm == (int)(sizeof T->norm / sizeof T->norm[0]))
                return BAD(r, "%s: more than 8 normalizers", where);
            T->norm[T->nnorm++] = forms[i].opt;
            return true;
        }
    return BAD(r, "%s: normalizer type \"%s\" is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)", where,
               type);
}

static bool read_pretok(const rd *r, json_t *p, const char *where, int depth)
{
    mpk_tok *T = r->T;
    const char *type = type_of(p);
    if (!json_is_object(p) || !type)
        return BAD(r, "%s must be an object with a \"type\", not %s", where, SHOW(p));
    if (strcmp(type, "Sequence") == 0 && depth == 0) {
        json_t *list = json_object_get(p, "pretokenizers"), *x;
        size_t i;
        if (!json_is_array(list))
            return BAD(r, "%s.pretokenizers must be a list, not %s", where, SHOW(list));
        json_array_foreach(list, i, x) {
            char w[64];
            snprintf(w, sizeof w, "%s.pretokenizers[%zu]", where, i);
            if (!read_pretok(r, x, w, depth + 1))
                return false;
        }
        return true;
    }
    if (T->npre == MAX_PRE)
        return BAD(r, "%s: more than %d pre-tokenizers", where, MAX_PRE);
    pretok *q = &T->pre[T->npre];
    *q = (pretok){0};
    if (strcmp(type, "ByteLevel") == 0) {
        bool regex = true;
        json_t *u = get(p, "use_regex");
        if (u && !json_is_boolean(u))
            return BAD(r, "%s.use_regex must be true or false, not %s", where, SHOW(u));
        regex = !u || json_is_true(u);
        q->bytelevel = true;
        if (!get_flag(r, p, where, "add_prefix_space", &q->prefix_space))
            return false;
        if (regex && !compile_regex(r, where, gpt2_regex, sizeof gpt2_regex - 1, &q->re))
            return false;
        q->behavior = SPLIT_ISOLATED;
        T->npre++;
        return true;
    }
    if (strcmp(type, "Split") != 0)
        return BAD(r, "%s: pre-tokenizer type \"%s\" is not supported (supported: Split, ByteLevel, Sequence)", where,
                   type);
    json_t *pat = json_object_get(p, "pattern"), *s;
    if (!get_flag(r, p, where, "invert", &q->invert))
        return false;
    static const char *const behaviors[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                            "Contiguous"};
    json_t *b = json_object_get(p, "behavior");
    int k = -1;
    for (int i = 0; i < 5 && json_is_string(b); i++)
        if (strcmp(json_string_value(b), behaviors[i]) == 0)
            k = i;
    if (k < 0)
        return BAD(r, "%s.behavior must be one of Removed, Isolated, MergedWithPrevious, MergedWithNext, "
                      "Contiguous, not %s", where, SHOW(b));
    q->behavior = (split_behavior)k;
    char w[80];
    snprintf(w, sizeof w, "%s.pattern", where);
    if (json_is_object(pat) && json_is_string(s = json_object_get(pat, "Regex"))) {
        if (!compile_regex(r, w, json_string_value(s), json_string_length(s), &q->re))
            return false;
    } else if (json_is_object(pat) && json_is_string(s = json_object_get(pat, "String"))) {
        /* A literal: quote it for PCRE2 (\Q...\E cannot hold "\E"). */
        size_t n = json_string_length(s);
        const char *lit = json_string_value(s);
        char *quoted = malloc(4 * n + 1), *o = quoted;
        if (!quoted)
            return BAD(r, "out of memory");
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)lit[i];
            if (c < 0x80 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
                o += sprintf(o, "\\x%02x", c);
            else
                *o++ = (char)c;
        }
        bool ok = n > 0 && compile_regex(r, w, quoted, (size_t)(o - quoted), &q->re);
        free(quoted);
        if (!ok)
            return n > 0 ? false : BAD(r, "%s.String is empty", w);
    } else {
        return BAD(r, "%s must be {\"Regex\": ...} or {\"String\": ...}, not %s", w, SHOW(pat));
    }
    T->npre++;
    return true;
}

/* Token text, decoded into T->bytes at e->off. */
static bool add_bytes(mpk_tok *T, const char *s, size_t n, entry *e)
{
    if (n > UINT32_MAX / 2 || T->nbytes + n > UINT32_MAX)
        return false;
    char *b = mpk_try_grow(T->bytes, &T->bytescap, T->nbytes + n + 1, 1);
    if (!b)
        return false;
    T->bytes = b;
    e->off = (uint32_t)T->nbytes;
    e->len = (uint32_t)unbyte(s, n, b + T->nbytes, &e->bytelevel);
    T->nbytes += e->len;
    return true;
}

static bool read_id(const rd *r, json_t *v, const char *where, int32_t *id)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= MAX_IDS)
        return BAD(r, "%s must be a token id from 0 to %d, not %s", where, MAX_IDS - 1, SHOW(v));
    *id = (int32_t)json_integer_value(v);
    return true;
}

/* The vocabulary and the added tokens: how many ids, then each one's bytes. */
static bool read_tokens(const rd *r, json_t *vocab, json_t *addl)
{
    mpk_tok *T = r->T;
    const char *key;
    json_t *v;
    size_t i;
    int32_t id, max = -1;
    json_object_foreach(vocab, key, v) {
        if (!read_id(r, v, "a model.vocab id", &id))
            return false;
        max = id > max ? id : max;
    }
    if (addl && !json_is_array(addl))
        return BAD(r, "added_tokens must be a list, not %s", SHOW(addl));
    T->add = calloc(json_array_size(addl) + 1, sizeof *T->add);
    if (!T->add)
        return BAD(r, "out of memory");
    json_array_foreach(addl, i, v) {
        char w[48];
        snprintf(w, sizeof w, "added_tokens[%zu]", i);
        json_t *c = json_object_get(v, "content");
        added *a = &T->add[T->nadd];
        if (!json_is_object(v) || !json_is_string(c) || json_string_length(c) == 0)
            return BAD(r, "%s must be an object with a non-empty \"content\" string", w);
        char w2[64];
        snprintf(w2, sizeof w2, "%s.id", w);
        if (!read_id(r, json_object_get(v, "id"), w2, &a->id) || !get_flag(r, v, w, "special", &a->special) ||
            !get_flag(r, v, w, "lstrip", &a->lstrip) || !get_flag(r, v, w, "rstrip", &a->rstrip) ||
            !get_flag(r, v, w, "single_word", &a->single_word) || !get_flag(r, v, w, "normalized", &a->normalized))
            return false;
        a->n = json_string_length(c);
        a->s = malloc(a->n + 1);
        if (!a->s)
            return BAD(r, "out of memory");
        memcpy(a->s, json_string_value(c), a->n + 1);
        T->nadd++;
        max = a->id > max ? a->id : max;
    }
    if (max < 0)
        return BAD(r, "model.vocab is empty");
    T->nids = (uint32_t)max + 1;
    T->e = calloc(T->nids, sizeof *T->e);
    T->vcap = pow2_at_least(2 * (size_t)T->nids);
    T->vocab = malloc(T->vcap * sizeof *T->vocab);
    if (!T->e || !T->vocab)
        return BAD(r, "out of memory");
    for (size_t k = 0; k < T->vcap; k++)
        T->vocab[k].id = -1;
    json_object_foreach(vocab, key, v) {
        id = (int32_t)json_integer_value(v);
        entry *e = &T->e[id];
        if (e->present) {
            json_t *k = json_string(key);
            BAD(r, "model.vocab: id %d is given to two tokens, %s and another", id, k ? SHOW(k) : "?");
            json_decref(k);
            return false;
        }
        if (!add_bytes(T, key, strlen(key), e))
            return BAD(r, "out of memory");
        e->koff = e->off, e->klen = e->len;
        e->present = true;
        int32_t dup;
        if (e->bytelevel && !vocab_put(T, id, &dup))
            return BAD(r, "model.vocab: ids %d and %d are the same token", dup, id);
    }
    for (size_t k = 0; k < T->nadd; k++) {
        /* An added token's text is what its id decodes to, even where the
         * vocabulary has the id too (HF looks up added tokens first). */
        entry *e = &T->e[T->add[k].id];
        uint32_t koff = e->koff, klen = e->klen;
        bool in_vocab = e->present, bl = e->bytelevel;
        if (!add_bytes(T, T->add[k].s, T->add[k].n, e))
            return BAD(r, "out of memory");
        e->koff = in_vocab ? koff : e->off, e->klen = in_vocab ? klen : e->len;
        e->bytelevel = in_vocab && bl;
        e->present = true;
        e->special |= T->add[k].special;
    }
    return true;
}

/* One merge, "a b" or ["a", "b"], into the two parts' text. */
static bool merge_parts(const rd *r, json_t *m, size_t i, const char **a, size_t *na, const char **b, size_t *nb)
{
    if (json_is_string(m)) {
        const char *s = json_string_value(m), *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' ') || sp == s || !sp[1])
            return BAD(r, "model.merges[%zu] %s is not two tokens separated by one space", i, SHOW(m));
        *a = s, *na = (size_t)(sp - s), *b = sp + 1, *nb = strlen(sp + 1);
        return true;
    }
    json_t *x = json_array_get(m, 0), *y = json_array_get(m, 1);
    if (!json_is_array(m) || json_array_size(m) != 2 || !json_is_string(x) || !json_is_string(y))
        return BAD(r, "model.merges[%zu] must be \"a b\" or [\"a\", \"b\"], not %s", i, SHOW(m));
    *a = json_string_value(x), *na = json_string_length(x);
    *b = json_string_value(y), *nb = json_string_length(y);
    return true;
}

static bool read_merges(const rd *r, json_t *merges)
{
    mpk_tok *T = r->T;
    if (!json_is_array(merges))
        return BAD(r, "model.merges must be a list, not %s", SHOW(merges));
    size_t n = json_array_size(merges), i;
    T->pcap = pow2_at_least(2 * n + 2);
    T->pairs = malloc(T->pcap * sizeof *T->pairs);
    char *buf = NULL;
    size_t cap = 0;
    if (!T->pairs)
        return BAD(r, "out of memory");
    for (size_t k = 0; k < T->pcap; k++)
        T->pairs[k] = (pslot){0, UINT32_MAX, 0};
    json_t *m;
    json_array_foreach(merges, i, m) {
        const char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        bool bl1, bl2;
        if (!merge_parts(r, m, i, &a, &na, &b, &nb))
            goto fail;
        char *nbuf = mpk_try_grow(buf, &cap, na + nb, 1);
        if (!nbuf) {
            BAD(r, "out of memory");
            goto fail;
        }
        buf = nbuf;
        size_t la = unbyte(a, na, buf, &bl1), lb = unbyte(b, nb, buf + la, &bl2);
        int32_t ia = bl1 ? vocab_get(T, buf, la) : -1, ib = bl2 ? vocab_get(T, buf + la, lb) : -1;
        int32_t ic = bl1 && bl2 ? vocab_get(T, buf, la + lb) : -1;
        if (ia < 0 || ib < 0 || ic < 0) {
            json_t *part = ia < 0 ? json_stringn(a, na) : ib < 0 ? json_stringn(b, nb) : NULL;
            BAD(r, "model.merges[%zu] %s: %s is not in model.vocab", i, SHOW(m),
                part ? SHOW(part) : "the merged token");
            json_decref(part);
            goto fail;
        }
        pair_put(T, ia, ib, (uint32_t)i, ic);
    }
    free(buf);
    return true;
fail:
    free(buf);
    return false;
}

static bool read_model(const rd *r, json_t *model)
{
    mpk_tok *T = r->T;
    if (!json_is_object(model))
        return BAD(r, "model must be an object, not %s", SHOW(model));
    const char *type = type_of(model);
    if (!type && json_object_get(model, "merges"))
        type = "BPE"; /* files of older tokenizers leave it out */
    if (!type || strcmp(type, "BPE") != 0)
        return BAD(r, "model: tokenizer model type %s is not supported: only byte-level BPE is (Llama 3, Qwen2/3, "
                      "GPT-2)", type ? type : "(none given)");
    json_t *v;
    bool fallback;
    if (!get_flag(r, model, "model", "byte_fallback", &fallback) ||
        !get_flag(r, model, "model", "fuse_unk", &T->fuse_unk) ||
        !get_flag(r, model, "model", "ignore_merges", &T->ignore_merges))
        return false;
    if (fallback)
        return BAD(r, "model.byte_fallback is true: SentencePiece-style BPE is not supported, only byte-level BPE");
    if ((v = get(model, "dropout")) && !(json_is_number(v) && json_number_value(v) == 0))
        return BAD(r, "model.dropout is %s: BPE dropout is not supported", SHOW(v));
    if ((v = get(model, "continuing_subword_prefix")) || (v = get(model, "end_of_word_suffix")))
        return BAD(r, "model: continuing_subword_prefix and end_of_word_suffix are not supported (%s)", SHOW(v));
    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab))
        return BAD(r, "model.vocab must be an object of token: id, not %s", SHOW(vocab));
    return true;
}

static bool read_post(const rd *r, json_t *p, const char *where, int depth)
{
    mpk_tok *T = r->T;
    const char *type = type_of(p);
    if (!json_is_object(p) || !type)
        return BAD(r, "%s must be an object with a \"type\", not %s", where, SHOW(p));
    if (strcmp(type, "ByteLevel") == 0)
        return true; /* offsets only */
    if (strcmp(type, "Sequence") == 0 && depth == 0) {
        json_t *list = json_object_get(p, "processors"), *x;
        size_t i;
        if (!json_is_array(list))
            return BAD(r, "%s.processors must be a list, not %s", where, SHOW(list));
        json_array_foreach(list, i, x) {
            char w[64];
            snprintf(w, sizeof w, "%s.processors[%zu]", where, i);
            if (!read_post(r, x, w, depth + 1))
                return false;
        }
        return true;
    }
    if (strcmp(type, "TemplateProcessing") != 0)
        return BAD(r, "%s: post-processor type \"%s\" is not supported (supported: TemplateProcessing, ByteLevel, "
                      "Sequence)", where, type);
    json_t *single = json_object_get(p, "single"), *specials = json_object_get(p, "special_tokens"), *x;
    if (!json_is_array(single) || !json_is_object(specials))
        return BAD(r, "%s needs a \"single\" list and a \"special_tokens\" object", where);
    size_t i;
    bool seen_a = false;
    free(T->prefix), free(T->suffix);
    T->prefix = T->suffix = NULL, T->nprefix = T->nsuffix = 0;
    json_array_foreach(single, i, x) {
        json_t *st = json_object_get(x, "SpecialToken"), *seq = json_object_get(x, "Sequence");
        if (json_is_object(seq)) {
            if (seen_a)
                return BAD(r, "%s.single has two sequences", where);
            seen_a = true;
            continue;
        }
        json_t *name = json_object_get(st, "id"), *def = json_object_get(specials, json_string_value(name));
        json_t *ids = json_object_get(def, "ids"), *id;
        if (!json_is_string(name) || !json_is_array(ids))
            return BAD(r, "%s.single[%zu] must be a Sequence or a SpecialToken of special_tokens, not %s", where, i,
                       SHOW(x));
        size_t k;
        json_array_foreach(ids, k, id) {
            int32_t t;
            char w[96];
            snprintf(w, sizeof w, "%s.special_tokens[%s].ids[%zu]", where, SHOW(name), k);
            if (!read_id(r, id, w, &t))
                return false;
            if ((uint32_t)t >= T->nids || !T->e[t].present)
                return BAD(r, "%s: id %d is not a token", w, t);
            int32_t **arr = seen_a ? &T->suffix : &T->prefix;
            size_t *n = seen_a ? &T->nsuffix : &T->nprefix;
            int32_t *a = realloc(*arr, (*n + 1) * sizeof *a);
            if (!a)
                return BAD(r, "out of memory");
            a[(*n)++] = t, *arr = a;
        }
    }
    if (!seen_a)
        return BAD(r, "%s.single has no sequence ($A)", where);
    return true;
}

static bool read_decoder(const rd *r, json_t *d)
{
    const char *type = type_of(d);
    if (!d)
        return BAD(r, "decoder: none given: a byte-level BPE needs the ByteLevel decoder");
    if (!json_is_object(d) || !type)
        return BAD(r, "decoder must be an object with a \"type\", not %s", SHOW(d));
    if (strcmp(type, "ByteLevel") != 0)
        return BAD(r, "decoder: decoder type \"%s\" is not supported (supported: ByteLevel)", type);
    return true;
}

static bool read_all(const rd *r, json_t *root)
{
    mpk_tok *T = r->T;
    if (!json_is_object(root))
        return BAD(r, "the top level must be an object, not %s", SHOW(root));
    json_t *model = json_object_get(root, "model"), *v;
    if (!read_model(r, model) ||
        !read_tokens(r, json_object_get(model, "vocab"), get(root, "added_tokens")))
        return false;
    if ((v = get(root, "normalizer")) && !read_normalizer(r, v, "normalizer", 0))
        return false;
    if (!(v = get(root, "pre_tokenizer")))
        return BAD(r, "pre_tokenizer: none given: a byte-level BPE needs a ByteLevel pre-tokenizer");
    if (!read_pretok(r, v, "pre_tokenizer", 0))
        return false;
    bool bytelevel = false;
    for (int i = 0; i < T->npre; i++)
        bytelevel |= T->pre[i].bytelevel;
    if (!bytelevel)
        return BAD(r, "pre_tokenizer: no ByteLevel pre-tokenizer: only byte-level BPE is supported");
    if ((v = get(root, "post_processor")) && !read_post(r, v, "post_processor", 0))
        return false;
    if (!read_decoder(r, get(root, "decoder")))
        return false;
    /* unk_token: an id for bytes the vocabulary lacks (else they are
     * dropped, as HF does). */
    T->unk = -1;
    if ((v = get(model, "unk_token"))) {
        if (!json_is_string(v))
            return BAD(r, "model.unk_token must be a string, not %s", SHOW(v));
        T->unk = mpk_tok_find(T, json_string_value(v));
        if (T->unk < 0)
            return BAD(r, "model.unk_token %s is not in model.vocab", SHOW(v));
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        T->byte_id[b] = vocab_get(T, &c, 1);
    }
    return read_merges(r, json_object_get(model, "merges"));
}

mpk_tok *mpk_tok_parse(const char *name, const char *json, size_t len, FILE *err)
{
    init_bytelevel();
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root) {
        fprintf(err, "%s:%d:%d: invalid JSON: %s\n", name, je.line, je.column, je.text);
        return NULL;
    }
    mpk_tok *T = calloc(1, sizeof *T);
    rd r = {name, err, T};
    bool ok = T && (T->name = strdup(name)) && read_all(&r, root);
    json_decref(root);
    if (ok) {
        T->md = pcre2_match_data_create(64, NULL);
        T->mctx = pcre2_match_context_create(NULL);
        T->jit = pcre2_jit_stack_create(32 << 10, 16 << 20, NULL);
        ok = T->md && T->mctx && T->jit;
        if (ok)
            pcre2_jit_stack_assign(T->mctx, NULL, T->jit);
        else
            mpk_text_bad(name, err, "out of memory");
    }
    if (!ok && T && !T->name)
        mpk_text_bad(name, err, "out of memory");
    if (!ok) {
        mpk_tok_free(T);
        return NULL;
    }
    return T;
}

mpk_tok *mpk_tok_load(const char *path, FILE *err)
{
    size_t n;
    char *buf = mpk_text_slurp(path, MAX_TOKENIZER, &n, err);
    if (!buf)
        return NULL;
    mpk_tok *T = mpk_tok_parse(path, buf, n, err);
    free(buf);
    return T;
}

mpk_tok *mpk_tok_open(const char *path, FILE *err)
{
    char *file = mpk_text_is_dir(path) ? mpk_text_sibling(path, "tokenizer.json") : strdup(path);
    if (!file) {
        fprintf(err, "%s: out of memory\n", path);
        return NULL;
    }
    mpk_tok *T = mpk_tok_load(file, err);
    free(file);
    return T;
}

void mpk_tok_free(mpk_tok *T)
{
    if (!T)
        return;
    for (int i = 0; i < MAX_PRE; i++)
        pcre2_code_free(T->pre[i].re);
    pcre2_match_data_free(T->md);
    pcre2_match_context_free(T->mctx);
    pcre2_jit_stack_free(T->jit);
    for (size_t i = 0; i < T->nadd; i++)
        free(T->add[i].s);
    free(T->add);
    free(T->e), free(T->bytes), free(T->vocab), free(T->pairs);
    free(T->prefix), free(T->suffix);
    free(T->cache), free(T->ckeys);
    mpk_ids_free(&T->cvals);
    free(T->sym), free(T->heap);
    free(T->name);
    free(T);
}

uint32_t mpk_tok_nids(const mpk_tok *T)
{
    return T->nids;
}

const char *mpk_tok_piece(const mpk_tok *T, int32_t id, size_t *len, bool *special)
{
    if (id < 0 || (uint32_t)id >= T->nids || !T->e[id].present)
        return NULL;
    *len = T->e[id].len;
    if (special)
        *special = T->e[id].special;
    return T->bytes + T->e[id].off;
}

int32_t mpk_tok_find(const mpk_tok *T, const char *content)
{
    size_t n = strlen(content);
    for (size_t i = 0; i < T->nadd; i++)
        if (T->add[i].n == n && memcmp(T->add[i].s, content, n) == 0)
            return T->add[i].id;
    char *buf = malloc(n + 1);
    bool bl;
    int32_t id = -1;
    if (buf) {
        size_t k = unbyte(content, n, buf, &bl);
        id = bl ? vocab_get(T, buf, k) : -1;
    }
    free(buf);
    return id;
}

/* ---- BPE ---------------------------------------------------------------- */

static bool heap_push(mpk_tok *T, size_t *n, uint32_t rank, int pos)
{
    struct merge *h = mpk_try_grow(T->heap, &T->heapcap, *n + 1, sizeof *h), x = {rank, pos};
    if (!h)
        return false;
    T->heap = h;
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p].rank < x.rank || (h[p].rank == x.rank && h[p].pos < x.pos))
            break;
        h[i] = h[p], i = p;
    }
    h[i] = x;
    return true;
}

static struct merge heap_pop(mpk_tok *T, size_t *n)
{
    struct merge *h = T->heap, top = h[0], x = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && (h[c + 1].rank < h[c].rank || (h[c + 1].rank == h[c].rank && h[c + 1].pos < h[c].pos)))
            c++;
        if (x.rank < h[c].rank || (x.rank == h[c].rank && x.pos < h[c].pos))
            break;
        h[i] = h[c], i = c;
    }
    h[i] = x;
    return top;
}

/* HF's Word::merge_all on the bytes of one pre-token. */
static bool bpe_word(mpk_tok *T, const char *s, size_t n, mpk_ids *out)
{
    struct sym *y = mpk_try_grow(T->sym, &T->symcap, n, sizeof *y);
    if (!y)
        return false;
    T->sym = y;
    int ns = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = T->byte_id[(unsigned char)s[i]];
        if (id < 0 && T->unk >= 0) {
            if (T->fuse_unk && ns > 0 && y[ns - 1].c == T->unk) {
                y[ns - 1].len++;
                continue;
            }
            id = T->unk;
        }
        if (id < 0)
            continue;
        y[ns] = (struct sym){id, ns - 1, ns + 1, 1};
        ns++;
    }
    if (ns == 0)
        return true;
    y[ns - 1].next = -1;
    size_t nh = 0;
    for (int i = 0; i + 1 < ns; i++) {
        const pslot *p = pair_get(T, y[i].c, y[i + 1].c);
        if (p && !heap_push(T, &nh, p->rank, i))
            return false;
    }
    while (nh > 0) {
        struct merge m = heap_pop(T, &nh);
        struct sym *a = &y[m.pos];
        if (a->len == 0 || a->next < 0)
            continue;
        struct sym *b = &y[a->next];
        const pslot *p = pair_get(T, a->c, b->c);
        if (!p || p->rank != m.rank)
            continue;
        a->c = p->id;
        a->len += b->len;
        a->next = b->next;
        b->len = 0;
        if (a->next >= 0)
            y[a->next].prev = m.pos;
        if (a->prev >= 0 && (p = pair_get(T, y[a->prev].c, a->c)) && !heap_push(T, &nh, p->rank, a->prev))
            return false;
        if (a->next >= 0 && (p = pair_get(T, a->c, y[a->next].c)) && !heap_push(T, &nh, p->rank, m.pos))
            return false;
    }
    for (int i = 0; i >= 0; i = y[i].next)
        if (!mpk_ids_push(out, y[i].c))
            return false;
    return true;
}

static cslot *cache_find(mpk_tok *T, const char *s, size_t n, uint32_t h)
{
    for (size_t i = h & (T->ccap - 1);; i = (i + 1) & (T->ccap - 1)) {
        cslot *c = &T->cache[i];
        if (c->klen == UINT32_MAX || (c->h == h && c->klen == n && memcmp(T->ckeys + c->koff, s, n) == 0))
            return c;
    }
}

static void cache_clear(mpk_tok *T)
{
    for (size_t i = 0; i < T->ccap; i++)
        T->cache[i].klen = UINT32_MAX;
    T->cn = 0, T->cklen = 0, T->cvals.n = 0;
}

/* One pre-token to ids, through the cache (words up to 256 bytes). */
static bool bpe(mpk_tok *T, const char *s, size_t n, mpk_ids *out)
{
    if (T->ignore_merges) {
        int32_t id = vocab_get(T, s, n);
        if (id >= 0)
            return mpk_ids_push(out, id);
    }
    if (n > 256)
        return bpe_word(T, s, n, out);
    if (!T->cache) {
        T->ccap = 2 * CACHE_MAX;
        if (!(T->cache = malloc(T->ccap * sizeof *T->cache)))
            return false;
        cache_clear(T);
    }
    uint32_t h = hash_bytes(s, n);
    cslot *c = cache_find(T, s, n, h);
    if (c->klen != UINT32_MAX) {
        for (uint32_t i = 0; i < c->vlen; i++)
            if (!mpk_ids_push(out, T->cvals.v[c->voff + i]))
                return false;
        return true;
    }
    size_t at = out->n;
    if (!bpe_word(T, s, n, out))
        return false;
    if (T->cn >= CACHE_MAX || T->cklen + n > UINT32_MAX / 2) {
        cache_clear(T);
        c = cache_find(T, s, n, h);
    }
    char *k = mpk_try_grow(T->ckeys, &T->ckcap, T->cklen + n, 1);
    if (!k)
        return true; /* not cached: still right */
    T->ckeys = k;
    uint32_t voff = (uint32_t)T->cvals.n;
    for (size_t i = at; i < out->n; i++)
        if (!mpk_ids_push(&T->cvals, out->v[i]))
            return true;
    memcpy(T->ckeys + T->cklen, s, n);
    *c = (cslot){h, (uint32_t)T->cklen, (uint32_t)n, voff, (uint32_t)(out->n - at)};
    T->cklen += n, T->cn++;
    return true;
}

/* ---- pre-tokenizing ----------------------------------------------------- */

typedef struct {
    const char *s;
    size_t n;
} span;

typedef struct {
    span *v;
    size_t n, cap;
} spans;

static bool spans_push(spans *a, const char *s, size_t n)
{
    if (n == 0)
        return true;
    span *v = mpk_try_grow(a->v, &a->cap, a->n + 1, sizeof *v);
    if (!v)
        return false;
    a->v = v;
    a->v[a->n++] = (span){s, n};
    return true;
}

/* Strings made by add_prefix_space, freed after the segment. */
typedef struct {
    char **v;
    size_t n, cap;
} owned;

static char *own(owned *o, size_t n)
{
    char **v = mpk_try_grow(o->v, &o->cap, o->n + 1, sizeof *v);
    if (!v)
        return NULL;
    o->v = v;
    char *s = malloc(n ? n : 1);
    if (s)
        o->v[o->n++] = s;
    return s;
}

/* The split of one piece by one regex, with HF's SplitDelimiterBehavior:
 * first the piece as gaps and matches (delimiters, or with invert the
 * gaps are), then joined as the behavior says. */
static bool split_piece(mpk_tok *T, const pretok *p, span in, spans *out)
{
    spans parts = {0};
    size_t nmatch = 0, off = 0, last = 0;
    bool *delim = NULL, ok = true;
    size_t dcap = 0;
#define PART(s_, n_, d_)                                                                    \
    do {                                                                                    \
        bool *nd = mpk_try_grow(delim, &dcap, parts.n + 1, sizeof *delim);                 \
        if (!nd) { ok = false; goto done; }                                                 \
        delim = nd;                                                                         \
        delim[parts.n] = (d_);                                                              \
        if (!spans_push(&parts, (s_), (n_))) { ok = false; goto done; }                     \
    } while (0)
    while (off <= in.n) {
        int rc = pcre2_match(p->re, (PCRE2_SPTR)in.s, in.n, off, 0, T->md, T->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            ok = false;
            goto done;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(T->md);
        size_t a = ov[0], b = ov[1];
        if (a == b) { /* an empty match splits nothing: one character on */
            off = a + 1;
            while (off < in.n && ((unsigned char)in.s[off] & 0xc0) == 0x80)
                off++;
            continue;
        }
        if (a > last)
            PART(in.s + last, a - last, p->invert);
        PART(in.s + a, b - a, !p->invert);
        nmatch++;
        last = off = b;
    }
    if (last < in.n)
        PART(in.s + last, in.n - last, p->invert);
#undef PART
    size_t base = out->n;
    switch (p->behavior) {
    case SPLIT_REMOVED:
    case SPLIT_ISOLATED:
        for (size_t k = 0; ok && k < parts.n; k++)
            if (p->behavior == SPLIT_ISOLATED || !delim[k])
                ok = spans_push(out, parts.v[k].s, parts.v[k].n);
        break;
    case SPLIT_PREV: /* a delimiter joins the piece before it, unless that is one */
    case SPLIT_CONTIGUOUS: /* neighbours of one kind join */
        for (size_t k = 0; ok && k < parts.n; k++) {
            bool join = k > 0 && out->n > base &&
                        (p->behavior == SPLIT_PREV ? delim[k] && !delim[k - 1] : delim[k] == delim[k - 1]);
            if (join)
                out->v[out->n - 1].n += parts.v[k].n;
            else
                ok = spans_push(out, parts.v[k].s, parts.v[k].n);
        }
        break;
    case SPLIT_NEXT: /* a delimiter joins the piece after it, unless that is one */
        for (size_t k = 0; ok && k < parts.n; k++) {
            if (delim[k] && k + 1 < parts.n && !delim[k + 1]) {
                ok = spans_push(out, parts.v[k].s, parts.v[k].n + parts.v[k + 1].n);
                k++;
            } else {
                ok = spans_push(out, parts.v[k].s, parts.v[k].n);
            }
        }
        break;
    }
    (void)nmatch;
done:
    free(parts.v);
    free(delim);
    return ok;
}

/* One segment (between added tokens, normalised) to ids. */
static bool pretokenize_and_bpe(mpk_tok *T, const char *s, size_t n, mpk_ids *out)
{
    spans a = {0}, b = {0};
    owned o = {0};
    bool ok = spans_push(&a, s, n);
    for (int i = 0; ok && i < T->npre; i++) {
        const pretok *p = &T->pre[i];
        b.n = 0;
        for (size_t k = 0; ok && k < a.n; k++) {
            span x = a.v[k];
            if (p->prefix_space && x.s[0] != ' ') {
                char *t = own(&o, x.n + 1);
                ok = t != NULL;
                if (!ok)
                    break;
                t[0] = ' ';
                memcpy(t + 1, x.s, x.n);
                x = (span){t, x.n + 1};
            }
            ok = p->re ? split_piece(T, p, x, &b) : spans_push(&b, x.s, x.n);
        }
        spans t = a;
        a = b, b = t;
    }
    for (size_t k = 0; ok && k < a.n; k++)
        ok = bpe(T, a.v[k].s, a.v[k].n, out);
    for (size_t k = 0; k < o.n; k++)
        free(o.v[k]);
    free(o.v), free(a.v), free(b.v);
    return ok;
}

/* ---- normalizing -------------------------------------------------------- */

/* Normalises the valid UTF-8 runs of s (invalid bytes are kept as they
 * are) into a malloc'd *out. */
static bool normalize(const mpk_tok *T, const char *s, size_t n, char **out, size_t *outn)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n) {
            utf8proc_int32_t c;
            utf8proc_ssize_t m = utf8proc_iterate((const utf8proc_uint8_t *)s + j, (utf8proc_ssize_t)(n - j), &c);
            if (m <= 0)
                break;
            j += (size_t)m;
        }
        /* [i, j) is valid; normalise it, then copy one invalid byte. */
        char *piece = NULL;
        size_t pn = j - i;
        if (j > i) {
            char *tmp = malloc(j - i + 1);
            if (!tmp) {
                free(buf);
                return false;
            }
            memcpy(tmp, s + i, j - i);
            tmp[j - i] = 0;
            for (int k = 0; k < T->nnorm; k++) {
                utf8proc_uint8_t *res = NULL;
                utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)tmp, (utf8proc_ssize_t)pn, &res,
                                                  T->norm[k]);
                if (r < 0) {
                    free(tmp);
                    free(buf);
                    return false;
                }
                free(tmp);
                tmp = (char *)res;
                pn = (size_t)r;
            }
            piece = tmp;
        }
        char *nb = mpk_try_grow(buf, &cap, len + pn + 1, 1);
        if (!nb) {
            free(piece), free(buf);
            return false;
        }
        buf = nb;
        if (pn)
            memcpy(buf + len, piece, pn);
        len += pn;
        free(piece);
        if (j < n)
            buf[len++] = s[j++];
        i = j;
    }
    *out = buf;
    *outn = len;
    return true;
}

/* ---- added tokens ------------------------------------------------------- */

static bool is_space_at(const char *s, size_t n, size_t i, size_t *len)
{
    utf8proc_int32_t c;
    utf8proc_ssize_t m = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
    if (m <= 0)
        return false;
    *len = (size_t)m;
    if (c == ' ' || (c >= 9 && c <= 13) || c == 0x85 || c == 0xa0)
        return true;
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ZS || k == UTF8PROC_CATEGORY_ZL || k == UTF8PROC_CATEGORY_ZP;
}

static bool is_word_byte(unsigned char c)
{
    return c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

/* The leftmost-longest added token (normalized ones or not) in s[from..n). */
static const added *find_added(const mpk_tok *T, const char *s, size_t n, size_t from, bool normalized,
                               size_t *at)
{
    for (size_t i = from; i < n; i++) {
        const added *best = NULL;
        for (size_t k = 0; k < T->nadd; k++) {
            const added *a = &T->add[k];
            if (a->normalized != normalized || a->s[0] != s[i] || a->n > n - i || (best && a->n <= best->n) ||
                memcmp(a->s, s + i, a->n) != 0)
                continue;
            if (a->single_word && ((i > 0 && is_word_byte((unsigned char)s[i - 1])) ||
                                   (i + a->n < n && is_word_byte((unsigned char)s[i + a->n]))))
                continue;
            best = a;
        }
        if (best) {
            *at = i;
            return best;
        }
    }
    return NULL;
}

static bool encode_segment(mpk_tok *T, const char *s, size_t n, bool normalized, mpk_ids *out);

/* Splits s at the added tokens of one kind; the text between goes on. */
static bool split_added(mpk_tok *T, const char *s, size_t n, bool normalized, mpk_ids *out)
{
    size_t pos = 0, at;
    const added *a;
    while (pos < n && T->nadd && (a = find_added(T, s, n, pos, normalized, &at))) {
        size_t start = at, end = at + a->n, sl;
        if (a->lstrip) /* the whitespace before it belongs to it */
            while (start > pos) {
                size_t b = start - 1;
                while (b > pos && ((unsigned char)s[b] & 0xc0) == 0x80)
                    b--;
                if (!is_space_at(s, n, b, &sl))
                    break;
                start = b;
            }
        if (a->rstrip)
            while (end < n && is_space_at(s, n, end, &sl))
                end += sl;
        if (!encode_segment(T, s + pos, start - pos, normalized, out) || !mpk_ids_push(out, a->id))
            return false;
        pos = end;
    }
    return encode_segment(T, s + pos, n - pos, normalized, out);
}

/* Text between raw-matched added tokens: normalise, then the normalised
 * added tokens, then pre-tokens; text between those: pre-tokens. */
static bool encode_segment(mpk_tok *T, const char *s, size_t n, bool normalized, mpk_ids *out)
{
    if (n == 0)
        return true;
    if (normalized)
        return pretokenize_and_bpe(T, s, n, out);
    if (T->nnorm == 0)
        return split_added(T, s, n, true, out);
    char *norm;
    size_t nn;
    if (!normalize(T, s, n, &norm, &nn))
        return false;
    bool ok = split_added(T, norm, nn, true, out);
    free(norm);
    return ok;
}

bool mpk_tok_encode(mpk_tok *T, const char *text, size_t len, bool add_special, mpk_ids *out)
{
    for (size_t i = 0; add_special && i < T->nprefix; i++)
        if (!mpk_ids_push(out, T->prefix[i]))
            return false;
    if (!split_added(T, text, len, false, out))
        return false;
    for (size_t i = 0; add_special && i < T->nsuffix; i++)
        if (!mpk_ids_push(out, T->suffix[i]))
            return false;
    return true;
}
