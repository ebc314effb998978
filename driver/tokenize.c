/*
 * tokenize.c - `mpk tokenize` and `mpk detokenize`: a checkpoint's
 * tokenizer for scripts.
 *
 *   mpk tokenize [--raw] [--stats] TOKENIZER [FILE]      text -> ids
 *   mpk tokenize --chat [--render] [--chat-format F] TOKENIZER CONV.json
 *   mpk detokenize [--skip-special] TOKENIZER [FILE]     ids -> text
 *
 * TOKENIZER is a tokenizer.json or the checkpoint directory holding it
 * (tokenizer_config.json, for --chat, is read beside it). Ids are written
 * space-separated on one line; text is written as the exact bytes the
 * tokens stand for. Exit status as mpk's: 1 a bad file, 2 usage.
 */
#include "driver/tokenize.h"
#include "text/text.h"
#include "mpk/util.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { EXIT_BAD = 1, MAX_TEXT = 1 << 30 };

/* cmd: "tokenize" or "detokenize", a literal */
#define usage_error(cmd, ...) mpk_usage_error("mpk " cmd, "mpk", __VA_ARGS__)

static char *read_input(const char *path, size_t *n)
{
    if (strcmp(path, "-") == 0)
        path = "/dev/stdin";
    return mpk_text_slurp(path, MAX_TEXT, n, stderr);
}

static bool print_ids(const mpk_ids *ids)
{
    for (size_t i = 0; i < ids->n; i++)
        printf("%s%d", i ? " " : "", ids->v[i]);
    printf("\n");
    if (fflush(stdout) != 0) {
        fprintf(stderr, "mpk: error: writing <stdout> failed: %s\n", strerror(errno));
        return false;
    }
    return true;
}

/* The conversation in FILE, rendered in the checkpoint's chat format. */
static char *render_chat(const char *tokenizer, const char *file, const char *format, size_t *len)
{
    char *cfg = mpk_text_sibling(tokenizer, "tokenizer_config.json");
    mpk_chat_format f;
    mpk_chat_conv conv;
    char *text = NULL;
    if (cfg && mpk_chat_format_read(cfg, format, &f, stderr)) {
        if (mpk_chat_conv_read(file, &conv, stderr)) {
            if (!(text = mpk_chat_render(&f, conv.m, conv.n, true, len)))
                fprintf(stderr, "%s: out of memory\n", file);
            mpk_chat_conv_free(&conv);
        }
        mpk_chat_format_free(&f);
    }
    free(cfg);
    return text;
}

int mpk_tokenize_cmd(int argc, char **argv)
{
    enum { OPT_RAW = 256, OPT_STATS, OPT_CHAT, OPT_RENDER, OPT_FORMAT };
    static const struct option longopts[] = {
        {"raw", no_argument, NULL, OPT_RAW},
        {"stats", no_argument, NULL, OPT_STATS},
        {"chat", no_argument, NULL, OPT_CHAT},
        {"render", no_argument, NULL, OPT_RENDER},
        {"chat-format", required_argument, NULL, OPT_FORMAT},
        {NULL, 0, NULL, 0},
    };
    bool raw = false, stats = false, chat = false, render = false;
    const char *format = NULL;
    optind = 1;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, ":", longopts, NULL)) != -1;) {
        switch (c) {
        case OPT_RAW: raw = true; break;
        case OPT_STATS: stats = true; break;
        case OPT_CHAT: chat = true; break;
        case OPT_RENDER: render = true; break;
        case OPT_FORMAT: format = optarg; break;
        case ':': return usage_error("tokenize", "option '%s' needs an argument", argv[optind - 1]);
        default: return usage_error("tokenize", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("tokenize", "%s", "no tokenizer given (a tokenizer.json or a checkpoint directory)");
    if (argc - optind > 2)
        return usage_error("tokenize", "one input file at a time; '%s' is one too many", argv[optind + 2]);
    if ((render || format) && !chat)
        return usage_error("tokenize", "%s", "--render and --chat-format go with --chat");
    if (chat && raw)
        return usage_error("tokenize", "%s", "--raw means nothing with --chat: a chat is encoded as rendered");
    const char *tokpath = argv[optind], *file = optind + 1 < argc ? argv[optind + 1] : "-";
    if (chat && optind + 1 >= argc)
        return usage_error("tokenize", "%s", "--chat needs a conversation file (a JSON list of messages)");
    size_t n;
    char *text = chat ? render_chat(tokpath, file, format, &n) : read_input(file, &n);
    if (!text)
        return EXIT_BAD;
    if (render) {
        bool ok = fwrite(text, 1, n, stdout) == n && fflush(stdout) == 0;
        free(text);
        if (!ok)
            fprintf(stderr, "mpk: error: writing <stdout> failed\n");
        return ok ? 0 : EXIT_BAD;
    }
    double t0 = mpk_now_ms();
    mpk_tok *T = mpk_tok_open(tokpath, stderr);
    double t1 = mpk_now_ms();
    int status = EXIT_BAD;
    mpk_ids ids = {0};
    if (T) {
        /* A rendered chat holds its special tokens already. */
        if (!mpk_tok_encode(T, text, n, !raw && !chat, &ids))
            fprintf(stderr, "mpk tokenize: error: out of memory encoding %zu bytes\n", n);
        else if (print_ids(&ids))
            status = 0;
    }
    double t2 = mpk_now_ms();
    if (stats && status == 0)
        fprintf(stderr, "mpk tokenize: loaded %s (%u ids) in %.1f ms; %zu bytes to %zu tokens in %.1f ms "
                        "(%.0f tokens/s, %.1f MB/s)\n", tokpath, mpk_tok_nids(T), t1 - t0, n, ids.n, t2 - t1,
                t2 > t1 ? (double)ids.n / (t2 - t1) * 1e3 : 0.0, t2 > t1 ? (double)n / (t2 - t1) / 1e3 : 0.0);
    mpk_ids_free(&ids);
    mpk_tok_free(T);
    free(text);
    return status;
}

/* Ids separated by white space or commas, from text. */
static bool parse_ids(const char *file, const char *s, mpk_ids *ids)
{
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || (*p >= '\t' && *p <= '\r'))
            p++;
        if (!*p)
            return true;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || *p == '-' || *p == '+' || errno || v > INT32_MAX ||
            (*end && *end != ',' && *end != ' ' && !(*end >= '\t' && *end <= '\r'))) {
            int len = (int)strcspn(p, " ,\t\n\r");
            fprintf(stderr, "%s: byte %zu: '%.*s' is not a token id\n", file, (size_t)(p - s), len > 20 ? 20 : len, p);
            return false;
        }
        if (!mpk_ids_push(ids, (int32_t)v)) {
            fprintf(stderr, "%s: out of memory\n", file);
            return false;
        }
        p = end;
    }
}

int mpk_detokenize_cmd(int argc, char **argv)
{
    enum { OPT_SKIP = 256 };
    static const struct option longopts[] = {
        {"skip-special", no_argument, NULL, OPT_SKIP},
        {NULL, 0, NULL, 0},
    };
    bool skip = false;
    optind = 1;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, ":", longopts, NULL)) != -1;) {
        switch (c) {
        case OPT_SKIP: skip = true; break;
        default: return usage_error("detokenize", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("detokenize", "%s", "no tokenizer given (a tokenizer.json or a checkpoint directory)");
    if (argc - optind > 2)
        return usage_error("detokenize", "one input file at a time; '%s' is one too many", argv[optind + 2]);
    const char *file = optind + 1 < argc ? argv[optind + 1] : "-";
    size_t n;
    char *text = read_input(file, &n);
    if (!text)
        return EXIT_BAD;
    mpk_ids ids = {0};
    mpk_tok *T = NULL;
    int status = EXIT_BAD;
    const char *name = strcmp(file, "-") ? file : "<stdin>";
    if (strlen(text) != n)
        fprintf(stderr, "%s: a NUL byte: not a list of token ids\n", name);
    else if (parse_ids(name, text, &ids) && (T = mpk_tok_open(argv[optind], stderr))) {
        status = 0;
        for (size_t i = 0; i < ids.n && status == 0; i++) {
            size_t len;
            bool special;
            const char *p = mpk_tok_piece(T, ids.v[i], &len, &special);
            if (!p) {
                fprintf(stderr, "%s: id %d is not a token of %s (ids 0..%u)\n", name, ids.v[i], argv[optind],
                        mpk_tok_nids(T) - 1);
                status = EXIT_BAD;
            } else if (!(skip && special) && fwrite(p, 1, len, stdout) != len) {
                status = EXIT_BAD;
            }
        }
        if (fflush(stdout) != 0 && status == 0) {
            fprintf(stderr, "mpk: error: writing <stdout> failed\n");
            status = EXIT_BAD;
        }
    }
    mpk_tok_free(T);
    mpk_ids_free(&ids);
    free(text);
    return status;
}
