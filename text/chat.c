/*
 * chat.c - chat formats: a conversation rendered as the checkpoint's
 * chat_template would render it, without a Jinja interpreter.
 *
 * Two families of templates are recognised, by the tokens they write:
 *
 *   chatml   <|im_start|>ROLE\nCONTENT<|im_end|>\n per message, then
 *            <|im_start|>assistant\n (Qwen2, Qwen2.5, Qwen3). A default
 *            system turn written as a literal in the template (Qwen2's
 *            "You are a helpful assistant.") is added when the
 *            conversation has none; a template that knows </think> (Qwen3)
 *            drops the reasoning of earlier assistant turns.
 *   llama3   BOS, then <|start_header_id|>ROLE<|end_header_id|>\n\n
 *            CONTENT|trim<|eot_id|> per message, then the assistant header
 *            (Llama 3, 3-Instruct).
 *
 * Anything else, and the Llama 3.1+ templates that add a dated system
 * preamble, are refused with a message rather than rendered wrong; the
 * user can force a family with --chat-format. The renderings are checked
 * against transformers' apply_chat_template in tests/run-text.sh.
 */
#include "text.h"

#include "mpk/util.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

enum { MAX_TOKENIZER_CONFIG = 64 << 20, MAX_CONV = 64 << 20 };


const char *mpk_chat_kind_name(mpk_chat_kind k)
{
    return k == MPK_CHAT_CHATML ? "chatml" : k == MPK_CHAT_LLAMA3 ? "llama3" : "none";
}

const char *mpk_chat_end_of_turn(const mpk_chat_format *f)
{
    return f->kind == MPK_CHAT_LLAMA3 ? "<|eot_id|>" : "<|im_end|>";
}

void mpk_chat_format_free(mpk_chat_format *f)
{
    free(f->bos);
    free(f->default_system);
    *f = (mpk_chat_format){0};
}

/* A special token in tokenizer_config.json: "text", or an AddedToken
 * object {"content": "text", ...}; NULL when absent. */
static bool token_text(const char *name, FILE *err, json_t *root, const char *key, char **out)
{
    json_t *v = json_object_get(root, key);
    if (json_is_object(v))
        v = json_object_get(v, "content");
    *out = NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v))
        return mpk_text_bad(name, err, "\"%s\" must be a string or an object with a \"content\" string", key);
    return (*out = strdup(json_string_value(v))) || mpk_text_bad(name, err, "out of memory");
}

/* The default system prompt of a ChatML template: a literal
 * '<|im_start|>system\n...<|im_end|>' in it, the \n written either way. */
static char *default_system(const char *t)
{
    static const char open[] = "<|im_start|>system", close[] = "<|im_end|>";
    for (const char *p = strstr(t, open); p; p = strstr(p + 1, open)) {
        const char *s = p + sizeof open - 1;
        if (s[0] == '\n')
            s += 1;
        else if (s[0] == '\\' && s[1] == 'n')
            s += 2;
        else
            continue;
        const char *e = strstr(s, close);
        if (!e || e == s || strcspn(s, "'\"{}+") < (size_t)(e - s))
            continue;
        char *out = malloc((size_t)(e - s) + 1), *o = out;
        if (!out)
            return NULL;
        for (const char *q = s; q < e; q++) { /* the Jinja string's escapes */
            if (*q == '\\' && q + 1 < e) {
                q++;
                *o++ = *q == 'n' ? '\n' : *q == 't' ? '\t' : *q;
            } else {
                *o++ = *q;
            }
        }
        *o = 0;
        return out;
    }
    return NULL;
}

bool mpk_chat_format_parse(const char *name, const char *json, size_t len, const char *force, mpk_chat_format *f,
                           FILE *err)
{
    *f = (mpk_chat_format){0};
    mpk_chat_kind k = MPK_CHAT_NONE;
    if (force && strcmp(force, "chatml") == 0)
        k = MPK_CHAT_CHATML;
    else if (force && strcmp(force, "llama3") == 0)
        k = MPK_CHAT_LLAMA3;
    else if (force)
        return mpk_text_bad("--chat-format", err, "unknown chat format '%s' (the formats are chatml and llama3)", force);
    json_t *root = NULL;
    if (json) {
        json_error_t je;
        root = json_loadb(json, len, 0, &je);
        if (!root) {
            fprintf(err, "%s:%d:%d: invalid JSON: %s\n", name, je.line, je.column, je.text);
            return false;
        }
        if (!json_is_object(root)) {
            json_decref(root);
            return mpk_text_bad(name, err, "the top level must be an object");
        }
    }
    bool ok = !root || token_text(name, err, root, "bos_token", &f->bos);
    json_t *t = root ? json_object_get(root, "chat_template") : NULL;
    if (json_is_array(t)) { /* [{"name": "default", "template": ...}, ...] */
        json_t *x, *pick = NULL;
        size_t i;
        json_array_foreach(t, i, x) {
            json_t *n = json_object_get(x, "name");
            if (json_is_string(n) && strcmp(json_string_value(n), "default") == 0)
                pick = json_object_get(x, "template");
        }
        if (!pick && ok && !k)
            ok = mpk_text_bad(name, err, "\"chat_template\" is a list with no template named \"default\"");
        t = pick;
    }
    if (ok && t && !json_is_string(t))
        ok = mpk_text_bad(name, err, "\"chat_template\" must be a string or a list of {\"name\", \"template\"}");
    const char *tt = json_is_string(t) ? json_string_value(t) : NULL;
    if (ok && !k) {
        if (!tt)
            ok = mpk_text_bad(name, err, "no \"chat_template\": name the format with --chat-format chatml or llama3");
        else if (strstr(tt, "<|im_start|>") && strstr(tt, "<|im_end|>"))
            k = MPK_CHAT_CHATML;
        else if (strstr(tt, "<|start_header_id|>") && strstr(tt, "<|end_header_id|>") && strstr(tt, "<|eot_id|>")) {
            if (strstr(tt, "Cutting Knowledge Date"))
                ok = mpk_text_bad(name, err, "\"chat_template\" is a Llama 3.1-style template (a dated system preamble), "
                                    "which mpk does not render; --chat-format llama3 renders plain Llama-3 headers");
            else
                k = MPK_CHAT_LLAMA3;
        } else
            ok = mpk_text_bad(name, err, "\"chat_template\" is neither ChatML (<|im_start|>) nor Llama-3 headers "
                                "(<|start_header_id|>): not rendered; force one with --chat-format chatml or llama3");
    }
    if (ok && k == MPK_CHAT_CHATML && tt) {
        f->default_system = default_system(tt);
        f->strip_thinking = strstr(tt, "</think>") != NULL;
    }
    if (ok && k == MPK_CHAT_LLAMA3 && !f->bos && !(f->bos = strdup("<|begin_of_text|>")))
        ok = mpk_text_bad(name, err, "out of memory");
    json_decref(root);
    f->kind = k;
    if (!ok)
        mpk_chat_format_free(f);
    return ok;
}

bool mpk_chat_format_read(const char *path, const char *force, mpk_chat_format *f, FILE *err)
{
    if (force && !mpk_text_exists(path))
        return mpk_chat_format_parse(path, NULL, 0, force, f, err);
    size_t n;
    char *buf = mpk_text_slurp(path, MAX_TOKENIZER_CONFIG, &n, err);
    if (!buf)
        return false;
    bool ok = mpk_chat_format_parse(path, buf, n, force, f, err);
    free(buf);
    return ok;
}

/* ---- rendering ---------------------------------------------------------- */

typedef struct {
    char *s;
    size_t n, cap;
    bool oom;
} buf;

static void put(buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    char *t = mpk_try_grow(b->s, &b->cap, b->n + n + 1, 1);
    if (!t) {
        b->oom = true;
        return;
    }
    b->s = t;
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void puts_(buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* Python's str.isspace, which Jinja's trim uses. */
static bool py_space(utf8proc_int32_t c)
{
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

/* s trimmed as Jinja's trim filter does (both ends). */
static void put_trimmed(buf *b, const char *s)
{
    size_t n = strlen(s), i = 0, end = 0;
    bool lead = true;
    for (size_t j = 0; j < n;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t m = utf8proc_iterate((const utf8proc_uint8_t *)s + j, (utf8proc_ssize_t)(n - j), &c);
        if (m <= 0)
            m = 1, c = -1;
        if (!py_space(c)) {
            if (lead)
                i = j, lead = false;
            end = j + (size_t)m;
        }
        j += (size_t)m;
    }
    if (!lead)
        put(b, s + i, end - i);
}

char *mpk_chat_render(const mpk_chat_format *f, const mpk_chat_msg *m, size_t n, bool generation_prompt,
                      size_t *len)
{
    buf b = {0};
    puts_(&b, "");
    if (f->kind == MPK_CHAT_LLAMA3) {
        for (size_t i = 0; i < n; i++) {
            if (i == 0 && f->bos)
                puts_(&b, f->bos);
            puts_(&b, "<|start_header_id|>");
            puts_(&b, m[i].role);
            puts_(&b, "<|end_header_id|>\n\n");
            put_trimmed(&b, m[i].content);
            puts_(&b, "<|eot_id|>");
        }
        if (generation_prompt)
            puts_(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    } else {
        size_t last_user = n;
        for (size_t i = 0; i < n; i++)
            if (strcmp(m[i].role, "user") == 0)
                last_user = i;
        if (f->default_system && (n == 0 || strcmp(m[0].role, "system") != 0) && n > 0) {
            puts_(&b, "<|im_start|>system\n");
            puts_(&b, f->default_system);
            puts_(&b, "<|im_end|>\n");
        }
        for (size_t i = 0; i < n; i++) {
            const char *c = m[i].content;
            puts_(&b, "<|im_start|>");
            puts_(&b, m[i].role);
            puts_(&b, "\n");
            const char *think;
            if (f->strip_thinking && strcmp(m[i].role, "assistant") == 0 && (last_user == n || i < last_user) &&
                (think = strstr(c, "</think>"))) {
                for (const char *q; (q = strstr(think + 1, "</think>"));)
                    think = q;
                c = think + strlen("</think>");
                while (*c == '\n')
                    c++;
            }
            puts_(&b, c);
            puts_(&b, "<|im_end|>\n");
        }
        if (generation_prompt)
            puts_(&b, "<|im_start|>assistant\n");
    }
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    *len = b.n;
    return b.s;
}

bool mpk_chat_conv_read(const char *path, mpk_chat_conv *c, FILE *err)
{
    *c = (mpk_chat_conv){0};
    size_t n;
    char *text = mpk_text_slurp(path, MAX_CONV, &n, err);
    if (!text)
        return false;
    json_error_t je;
    json_t *root = json_loadb(text, n, 0, &je), *x;
    free(text);
    if (!root) {
        fprintf(err, "%s:%d:%d: invalid JSON: %s\n", path, je.line, je.column, je.text);
        return false;
    }
    size_t i;
    bool ok = json_is_array(root) || mpk_text_bad(path, err, "a conversation is a list of {\"role\": ..., \"content\": ...}");
    if (ok && !(c->m = calloc(json_array_size(root) + 1, sizeof *c->m)))
        ok = mpk_text_bad(path, err, "out of memory");
    if (ok)
        json_array_foreach(root, i, x) {
            json_t *r = json_object_get(x, "role"), *t = json_object_get(x, "content");
            if (!json_is_string(r) || !json_is_string(t) || strlen(json_string_value(t)) != json_string_length(t)) {
                ok = mpk_text_bad(path, err, "message %zu: needs \"role\" and \"content\" strings (without NUL)", i);
                break;
            }
            c->m[c->n++] = (mpk_chat_msg){json_string_value(r), json_string_value(t)};
        }
    c->keep = root;
    if (!ok)
        mpk_chat_conv_free(c);
    return ok;
}

void mpk_chat_conv_free(mpk_chat_conv *c)
{
    free(c->m);
    json_decref(c->keep);
    *c = (mpk_chat_conv){0};
}
