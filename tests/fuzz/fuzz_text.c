/*
 * fuzz_text.c - the text readers under a fuzzer: tokenizer.json,
 * tokenizer_config.json (chat templates), generation_config.json.
 *
 * Built with clang -fsanitize=fuzzer (make fuzz-text) this is a libFuzzer
 * target: the first byte of an input picks the reader (0 tokenizer.json,
 * 1 tokenizer_config.json, 2 generation_config.json, by its value mod 3),
 * the rest is the file. A tokenizer that loads then encodes a fixed text
 * with special tokens, CJK, emoji and invalid UTF-8, and the input itself,
 * and decodes every id; a chat format renders a conversation. Built with
 * -DMPK_FUZZ_MAIN (make check) it replays files: one named *tokenizer.json,
 * *tokenizer_config.json or *generation_config.json goes to that reader
 * whole, any other file is read as a fuzzer input. A crash, a sanitizer
 * report, a slow input, or a reader that fails without saying why (nothing
 * on its error stream) is the bug.
 */
#include "text/text.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char sample[] = "Hello, world! It's 2024: 12345 <|im_start|>user\n日本語 👍🏽 e\xcc\x81 \xff\xfe\xc3 "
                             "<|begin_of_text|>x<|eot_id|>  \t\n\n end";

static FILE *sink(void)
{
    static FILE *f;
    if (!f)
        f = tmpfile();
    if (!f)
        abort();
    rewind(f);
    return f;
}

/* A reader that refuses must have said something. */
static void said_why(FILE *f)
{
    if (ftell(f) == 0) {
        fprintf(stderr, "a text reader failed without a message\n");
        abort();
    }
}

static void tokenizer(const char *data, size_t size)
{
    FILE *err = sink();
    mpk_tok *T = mpk_tok_parse("tokenizer.json", data, size, err);
    if (!T) {
        said_why(err);
        return;
    }
    mpk_ids ids = {0};
    if (!mpk_tok_encode(T, sample, sizeof sample - 1, true, &ids) ||
        !mpk_tok_encode(T, data, size < 4096 ? size : 4096, false, &ids))
        abort();
    for (size_t i = 0; i < ids.n; i++) {
        size_t len;
        bool special;
        if (!mpk_tok_piece(T, ids.v[i], &len, &special) || (uint32_t)ids.v[i] >= mpk_tok_nids(T))
            abort(); /* encode made an id that decode does not know */
    }
    mpk_ids_free(&ids);
    mpk_tok_free(T);
}

static void chat_config(const char *data, size_t size)
{
    FILE *err = sink();
    mpk_chat_format f;
    if (!mpk_chat_format_parse("tokenizer_config.json", data, size, NULL, &f, err)) {
        said_why(err);
        return;
    }
    mpk_chat_msg m[] = {{"system", "Be brief."}, {"user", " hi \n"}, {"assistant", "<think>x</think>\n\nyo"},
                        {"user", "日本語"}};
    size_t len;
    char *text = mpk_chat_render(&f, m, 4, true, &len);
    if (!text || strlen(text) != len)
        abort();
    free(text);
    mpk_chat_format_free(&f);
}

static void generation(const char *data, size_t size)
{
    FILE *err = sink();
    mpk_genconfig g;
    if (!mpk_genconfig_parse("generation_config.json", data, size, &g, err))
        said_why(err);
    else if (g.neos < 0 || g.neos > MPK_GEN_MAX_EOS)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *s = (const char *)data + 1;
    switch (data[0] % 3) {
    case 0: tokenizer(s, size - 1); break;
    case 1: chat_config(s, size - 1); break;
    default: generation(s, size - 1); break;
    }
    return 0;
}

#ifdef MPK_FUZZ_MAIN
#include "replay.h"

const char fuzz_replay_name[] = "fuzz text smoke";
const char *fuzz_replay_counts(void) { return ""; }

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && strcmp(s + n - m, tail) == 0;
}

/* data is NUL-terminated, as the readers' callers give it. */
void fuzz_replay_one(const char *path, const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    if (ends_with(path, "tokenizer_config.json"))
        chat_config(buf, size);
    else if (ends_with(path, "tokenizer.json"))
        tokenizer(buf, size);
    else if (ends_with(path, "generation_config.json"))
        generation(buf, size);
    else
        LLVMFuzzerTestOneInput(data, size);
}
#endif
