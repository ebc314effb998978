/*
 * check_weights.c - the safetensors loader (runtime/weights.c and
 * runtime/safetensors.c): good checkpoints of each layout bind with the
 * right bytes, and every kind of bad or hostile file fails with a message
 * naming the file and the tensor.
 *
 * Each test writes its checkpoint into a fresh temporary directory; the
 * headers are written out by hand, so that a test can say exactly which
 * byte is wrong.
 */
#include "runtime/runtime.h"

#include <check.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_mpk.h"

static char dir[200];

static void make_dir(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/mpk-weights-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
    rmdir(dir);
}

/* DIR/NAME, in one of a few rotating buffers so that several can be live. */
static const char *at(const char *name)
{
    static char bufs[4][300];
    static int next;
    char *p = bufs[next++ % 4];
    snprintf(p, sizeof bufs[0], "%s/%s", dir, name);
    return p;
}

static void write_raw(const char *name, const void *bytes, size_t n)
{
    FILE *f = fopen(at(name), "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(bytes, 1, n, f), n);
    fclose(f);
}

/* A safetensors file: the length of HEADER, HEADER as it is, then DATA. */
static void write_st(const char *name, const char *header, const void *data, size_t n)
{
    size_t hn = strlen(header);
    unsigned char *buf = malloc(8 + hn + n);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hn >> (8 * i));
    memcpy(buf + 8, header, hn);
    if (n)
        memcpy(buf + 8 + hn, data, n);
    write_raw(name, buf, 8 + hn + n);
    free(buf);
}

typedef struct {
    mpk_weights *w;
    char *msg; /* everything reported */
    size_t len;
} opened;

static opened load(const char *path, mpk_weight_req *reqs, size_t n)
{
    opened o = {0};
    FILE *f = open_memstream(&o.msg, &o.len);
    ck_assert_ptr_nonnull(f);
    o.w = mpk_weights_open(path, reqs, n, f);
    fclose(f);
    return o;
}

static void opened_free(opened *o)
{
    mpk_weights_close(o->w);
    free(o->msg);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Loading must fail, reporting NLINES lines, which contain the given
 * texts (each a format, with %s for the temporary directory). */
static void expect_fail(const char *path, mpk_weight_req *reqs, size_t n, int nlines, ...)
{
    opened o = load(path, reqs, n);
    ck_assert_msg(o.w == NULL, "loading %s succeeded", path);
    for (size_t i = 0; i < n; i++)
        ck_assert_ptr_null(reqs[i].data);
    va_list ap;
    va_start(ap, nlines);
    for (int i = 0; i < nlines; i++) {
        const char *fmt = va_arg(ap, const char *);
        char want[1024];
        snprintf(want, sizeof want, fmt, dir);
        ck_assert_msg(strstr(o.msg, want) != NULL, "expected \"%s\" in:\n%s", want, o.msg);
    }
    va_end(ap);
    ck_assert_msg(count_lines(o.msg) == nlines, "expected %d lines in:\n%s", nlines, o.msg);
    opened_free(&o);
}

#define REQ(n, dt, ...)                                                                  \
    {.name = (n), .dtype = (dt), .ndim = sizeof((uint64_t[]){__VA_ARGS__}) / 8,         \
     .dims = {__VA_ARGS__}}
#define REQ0(n, dt) {.name = (n), .dtype = (dt)} /* a scalar */

/* bf16 of small integers: the top half of the float's bits. */
static uint16_t bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

/* ---- good checkpoints ---------------------------------------------------- */

/* a: BF16 [2, 3] = 1..6 at [0, 12); b: F32 [2] = 0.5, -2 at [12, 20);
 * c: I32 [] = 7 at [20, 24). */
static const char GOOD_HEADER[] =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]},"
    "\"c\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[20,24]}";

static void good_data(unsigned char *d)
{
    for (int i = 0; i < 6; i++) {
        uint16_t v = bf16((float)(i + 1));
        memcpy(d + 2 * i, &v, 2);
    }
    float f[2] = {0.5f, -2.0f};
    int32_t c = 7;
    memcpy(d + 12, f, 8);
    memcpy(d + 20, &c, 4);
}

/* GOOD_HEADER plus TAIL (more entries and the closing brace). */
/* The good file, with tail ending its header and extra zero bytes after
 * the good tensors' 24 (for the entries tail adds). */
static void write_good_n(const char *name, const char *tail, size_t extra)
{
    char header[2048];
    snprintf(header, sizeof header, "%s%s", GOOD_HEADER, tail);
    unsigned char d[24 + 64] = {0};
    ck_assert(extra <= 64);
    good_data(d);
    write_st(name, header, d, 24 + extra);
}

static void write_good(const char *name, const char *tail) { write_good_n(name, tail, 0); }

static void expect_good_values(const mpk_weight_req *r)
{
    for (int i = 0; i < 6; i++) {
        uint16_t v;
        memcpy(&v, (const uint8_t *)r[0].data + 2 * i, 2); /* data may be unaligned */
        ck_assert_uint_eq(v, bf16((float)(i + 1)));
    }
    float f[2];
    memcpy(f, r[1].data, 8);
    ck_assert(f[0] == 0.5f && f[1] == -2.0f);
    int32_t c;
    memcpy(&c, r[2].data, 4);
    ck_assert_int_eq(c, 7);
    ck_assert_uint_eq(r[0].nbytes, 12);
    ck_assert_uint_eq(r[1].nbytes, 8);
    ck_assert_uint_eq(r[2].nbytes, 4);
}

START_TEST(single_file)
{
    /* Entries the model does not ask for may have dtypes mpk lacks, even
     * ones safetensors does not define (their size is then unchecked); the
     * header length is odd, so the data area is unaligned. */
    write_good_n("m.safetensors", ",\"big\":{\"dtype\":\"I64\",\"shape\":[0],\"data_offsets\":[24,24]},"
                                  "\"odd\":{\"dtype\":\"Q3\",\"shape\":[5],\"data_offsets\":[24,25]}}  ", 1);
    mpk_weight_req r[] = {REQ("a", MPKB_BF16, 2, 3), REQ("b", MPKB_F32, 2), REQ0("c", MPKB_I32)};
    opened o = load(at("m.safetensors"), r, 3);
    ck_assert_msg(o.w != NULL, "%s", o.msg);
    ck_assert_uint_eq(o.len, 0);
    expect_good_values(r);
    ck_assert_uint_eq(mpk_weights_bytes(o.w), 24);
    opened_free(&o);
}
END_TEST

START_TEST(directory_with_model_safetensors)
{
    write_good("model.safetensors", "}");
    /* model.safetensors wins over a broken index beside it */
    write_raw("model.safetensors.index.json", "garbage", 7);
    mpk_weight_req r[] = {REQ("a", MPKB_BF16, 2, 3), REQ("b", MPKB_F32, 2), REQ0("c", MPKB_I32)};
    char slashed[256];
    snprintf(slashed, sizeof slashed, "%s/", dir);
    const char *paths[] = {dir, slashed};
    for (int i = 0; i < 2; i++) {
        opened o = load(paths[i], r, 3);
        ck_assert_msg(o.w != NULL, "%s", o.msg);
        expect_good_values(r);
        opened_free(&o);
    }
}
END_TEST

static const char INDEX[] =
    "{\"metadata\":{\"total_size\":24},\"weight_map\":{"
    "\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00002-of-00002.safetensors\","
    "\"c\":\"model-00002-of-00002.safetensors\",\"gone\":\"not-there.safetensors\"}}";

static void write_shards(void)
{
    unsigned char d[24];
    good_data(d);
    write_st("model-00001-of-00002.safetensors",
             "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]}}", d, 12);
    write_st("model-00002-of-00002.safetensors",
             "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"c\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[8,12]}}",
             d + 12, 12);
}

START_TEST(sharded_directory)
{
    /* "gone" lives in a shard that does not exist: not asked for, so not
     * opened. */
    write_shards();
    write_raw("model.safetensors.index.json", INDEX, strlen(INDEX));
    mpk_weight_req r[] = {REQ("a", MPKB_BF16, 2, 3), REQ("b", MPKB_F32, 2), REQ0("c", MPKB_I32)};
    const char *paths[] = {dir, at("model.safetensors.index.json")};
    for (int i = 0; i < 2; i++) {
        opened o = load(paths[i], r, 3);
        ck_assert_msg(o.w != NULL, "%s", o.msg);
        expect_good_values(r);
        ck_assert_uint_eq(mpk_weights_bytes(o.w), 24);
        opened_free(&o);
    }
}
END_TEST

START_TEST(nothing_requested)
{
    write_good("m.safetensors", "}");
    opened o = load(at("m.safetensors"), NULL, 0);
    ck_assert_ptr_nonnull(o.w);
    ck_assert_uint_eq(mpk_weights_bytes(o.w), 0);
    opened_free(&o);
}
END_TEST

/* ---- what the model needs ------------------------------------------------ */

START_TEST(every_mismatch_is_reported)
{
    write_good_n("m.safetensors", ",\"q\":{\"dtype\":\"Q3\",\"shape\":[5],\"data_offsets\":[24,25]},"
                                  "\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[25,33]}}", 9);
    mpk_weight_req r[] = {
        REQ("a", MPKB_BF16, 3, 2), REQ("b", MPKB_BF16, 2), REQ("c", MPKB_F32, 1),
        REQ("zz", MPKB_BF16, 1), REQ("q", MPKB_F32, 5), REQ("d", MPKB_F32, 1),
    };
    expect_fail(at("m.safetensors"), r, 6, 7,
                "%s/m.safetensors: tensor 'a': has shape [2, 3], the model needs [3, 2]\n",
                "%s/m.safetensors: tensor 'b': has dtype F32, the model needs BF16\n",
                "%s/m.safetensors: tensor 'c': has dtype I32, the model needs F32\n",
                "%s/m.safetensors: tensor 'c': has shape [], the model needs [1]\n",
                "%s/m.safetensors: tensor 'zz': missing\n",
                "%s/m.safetensors: tensor 'q': has dtype 'Q3', which safetensors does not define",
                "%s/m.safetensors: tensor 'd': has dtype F64, the model needs F32\n");
}
END_TEST

/* As the safetensors library: the tensors' bytes tile the data area. */
START_TEST(overlap_gap_and_trailing_bytes)
{
    mpk_weight_req r[] = {REQ("a", MPKB_BF16, 2, 3), REQ("b", MPKB_F32, 2), REQ0("c", MPKB_I32)};
    write_good_n("m.safetensors", ",\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0);
    expect_fail(at("m.safetensors"), r, 3, 1,
                "%s/m.safetensors: tensor 'x': data_offsets [4, 12] overlap another tensor's bytes (up to 12)\n");
    write_good_n("m.safetensors", ",\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[28,32]}}", 8);
    expect_fail(at("m.safetensors"), r, 3, 1,
                "%s/m.safetensors: tensor 'x': data_offsets [28, 32] leave bytes 24..28 of the data area to no "
                "tensor\n");
    write_good_n("m.safetensors", "}", 5);
    expect_fail(at("m.safetensors"), r, 3, 1,
                "%s/m.safetensors: 5 bytes after the tensors' data (the data area has 29, the tensors end at 24)\n");
}
END_TEST

START_TEST(empty_index)
{
    write_raw("model.safetensors.index.json", "", 0);
    mpk_weight_req r[] = {REQ("a", MPKB_BF16, 2, 3)};
    expect_fail(dir, r, 1, 1,
                "%s/model.safetensors.index.json: an empty file, not an index (a JSON object with "
                "\"weight_map\")\n");
}
END_TEST

START_TEST(missing_in_index_and_in_shard)
{
    write_shards();
    const char *index = "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                        "\"x\":\"model-00001-of-00002.safetensors\"}}";
    write_raw("model.safetensors.index.json", index, strlen(index));
    mpk_weight_req r[] = {REQ("a", MPKB_BF16, 2, 3), REQ("x", MPKB_F32, 2), REQ("y", MPKB_F32, 2)};
    expect_fail(dir, r, 3, 2,
                "%s/model.safetensors.index.json: tensor 'y': missing\n",
                "%s/model-00001-of-00002.safetensors: tensor 'x': missing (the index places it "
                "in this shard)\n");
}
END_TEST

START_TEST(names_are_escaped)
{
    /* A newline in a name must not start a forged line of its own. */
    write_good("m.safetensors", "}");
    mpk_weight_req r[] = {REQ("evil\nm.safetensors: all good", MPKB_BF16, 1)};
    expect_fail(at("m.safetensors"), r, 1, 1,
                "%s/m.safetensors: tensor 'evil\\x0am.safetensors: all good': missing\n");
}
END_TEST

START_TEST(bad_requests)
{
    write_good("m.safetensors", "}");
    mpk_weight_req r[] = {REQ("a", 9, 2, 3), REQ("b", MPKB_F32, 2), REQ(NULL, MPKB_F32, 2)};
    r[1].ndim = 7;
    expect_fail(at("m.safetensors"), r, 3, 3, "tensor 'a': the model asks for dtype 9",
                "tensor 'b': the model asks for 7 dimensions", "request 2 names no tensor");
}
END_TEST

/* ---- bad files ----------------------------------------------------------- */

START_TEST(no_checkpoint_there)
{
    mpk_weight_req r[] = {REQ("a", MPKB_BF16, 2, 3)};
    expect_fail(dir, r, 1, 1,
                "%s: neither model.safetensors nor model.safetensors.index.json is in this "
                "directory\n");
    expect_fail(at("nope.safetensors"), r, 1, 1,
                "%s/nope.safetensors: cannot open: No such file or directory\n");
    ck_assert_int_eq(mkfifo(at("fifo.safetensors"), 0600), 0); /* must not hang */
    expect_fail(at("fifo.safetensors"), r, 1, 1, "%s/fifo.safetensors: not a regular file\n");
}
END_TEST

START_TEST(too_short)
{
    mpk_weight_req r[] = {REQ("a", MPKB_BF16, 2, 3)};
    write_raw("m.safetensors", "\x10\0\0", 3);
    expect_fail(at("m.safetensors"), r, 1, 1,
                "%s/m.safetensors: 3 bytes, too short for a safetensors file");
    write_raw("e.safetensors", "", 0);
    expect_fail(at("e.safetensors"), r, 1, 1,
                "%s/e.safetensors: 0 bytes, too short for a safetensors file");
}
END_TEST

START_TEST(header_length_past_eof)
{
    unsigned char b[40] = {0xe8, 0x03}; /* 1000 */
    memcpy(b + 8, "{\"a\":{}}", 8);
    write_raw("m.safetensors", b, sizeof b);
    mpk_weight_req r[] = {REQ("a", MPKB_BF16, 2, 3)};
    expect_fail(at("m.safetensors"), r, 1, 1,
                "%s/m.safetensors: header length 1000 exceeds the file size 40 (truncated "
                "file?)\n");
    memset(b, 0xff, 8); /* 2^64 - 1: no overflow in 8 + N */
    write_raw("m.safetensors", b, sizeof b);
    expect_fail(at("m.safetensors"), r, 1, 1,
                "%s/m.safetensors: header length 18446744073709551615 exceeds the file size 40");
}
END_TEST

START_TEST(header_length_absurd)
{
    /* 150 MiB of header in a sparse 160 MiB file: within the file, over the
     * cap, refused before parsing. */
    unsigned char b[8] = {0, 0, 0x60, 0x09}; /* 0x09600000 = 150 MiB */
    write_raw("m.safetensors", b, 8);
    ck_assert_int_eq(truncate(at("m.safetensors"), 160 << 20), 0);
    mpk_weight_req r[] = {REQ("a", MPKB_BF16, 2, 3)};
    expect_fail(at("m.safetensors"), r, 1, 1,
                "%s/m.safetensors: header length 157286400 exceeds the limit of 100 MiB");
}
END_TEST

START_TEST(garbage_json)
{
    mpk_weight_req r[] = {REQ("a", MPKB_BF16, 2, 3)};
    write_st("m.safetensors", "{\"a\": nope}", NULL, 0);
    expect_fail(at("m.safetensors"), r, 1, 1, "%s/m.safetensors: the header is not valid JSON: ");
    /* trailing spaces are padding; anything else after the object is not */
    write_st("m.safetensors", "{}  x", NULL, 0);
    expect_fail(at("m.safetensors"), r, 1, 1, "%s/m.safetensors: the header is not valid JSON: ");
    write_st("m.safetensors", "", NULL, 0);
    expect_fail(at("m.safetensors"), r, 1, 1, "%s/m.safetensors: the header is not valid JSON: ");
    unsigned char nul[8 + 4] = {4, 0, 0, 0, 0, 0, 0, 0, '{', '}', 0, 0};
    write_raw("m.safetensors", nul, sizeof nul);
    expect_fail(at("m.safetensors"), r, 1, 1, "%s/m.safetensors: the header is not valid JSON: ");
}
END_TEST

START_TEST(non_object_json)
{
    mpk_weight_req r[] = {REQ("a", MPKB_BF16, 2, 3)};
    write_st("m.safetensors", "[1, 2]", NULL, 0);
    expect_fail(at("m.safetensors"), r, 1, 1,
                "%s/m.safetensors: the header is not a JSON object\n");
    write_st("m.safetensors", "{\"__metadata__\":{\"k\":1}}", NULL, 0);
    expect_fail(at("m.safetensors"), r, 1, 2,
                "%s/m.safetensors: \"__metadata__\" value 'k' is not a string\n",
                "%s/m.safetensors: tensor 'a': missing\n");
}
END_TEST

START_TEST(duplicate_names)
{
    write_st("m.safetensors",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
             "12345678", 8);
    mpk_weight_req r[] = {REQ("a", MPKB_F32, 1)};
    expect_fail(at("m.safetensors"), r, 1, 1,
                "%s/m.safetensors: the header names something twice: duplicate object key "
                "near '\"a\"'");
}
END_TEST

/* Every malformed entry is reported, requested or not, each by name. */
START_TEST(bad_entries)
{
    write_st("m.safetensors",
             "{\"t1\":[1],"
             "\"t2\":{\"shape\":[1],\"data_offsets\":[0,4]},"
             "\"t3\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]},"
             "\"t4\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]},"
             "\"t5\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]},"
             "\"t6\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]},"
             "\"t7\":{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[0,4]},"
             "\"t8\":{\"dtype\":\"F32\",\"shape\":[1]},"
             "\"t9\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]},"
             "\"t10\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]},"
             "\"t11\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]},"
             "\"t12\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]},"
             "\"t13\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
             "\"t14\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]},"
             "\"t15\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
             "\"data_offsets\":[0,4]},"
             "\"t16\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,1]},"
             "\"ok\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,0],"
             "\"data_offsets\":[8,8]}}",
             "12345678", 8);
    mpk_weight_req r[] = {REQ("t1", MPKB_F32, 1), REQ("t13", MPKB_F32, 1)};
    expect_fail(at("m.safetensors"), r, 2, 16,
                "%s/m.safetensors: tensor 't1': is not a JSON object\n",
                "%s/m.safetensors: tensor 't2': has no \"dtype\"\n",
                "%s/m.safetensors: tensor 't3': \"dtype\" is not a string\n",
                "%s/m.safetensors: tensor 't4': has no \"shape\"\n",
                "%s/m.safetensors: tensor 't5': \"shape\" dimension 0 is not a non-negative "
                "integer\n",
                "%s/m.safetensors: tensor 't6': \"shape\" dimension 0 is not",
                "%s/m.safetensors: tensor 't7': \"shape\" is not an array\n",
                "%s/m.safetensors: tensor 't8': has no \"data_offsets\"\n",
                "%s/m.safetensors: tensor 't9': \"data_offsets\" is not [begin, end]",
                "%s/m.safetensors: tensor 't10': \"data_offsets\" is not [begin, end]",
                "%s/m.safetensors: tensor 't11': \"data_offsets\" is not [begin, end]",
                "%s/m.safetensors: tensor 't12': data_offsets [8, 4] begin after they end\n",
                "%s/m.safetensors: tensor 't13': data_offsets [8, 12] end past the data area of "
                "8 bytes (truncated file?)\n",
                "%s/m.safetensors: tensor 't14': data_offsets [0, 4] hold 4 bytes, but 2 F32 "
                "elements need 8\n",
                "%s/m.safetensors: tensor 't15': shape is too large",
                "%s/m.safetensors: tensor 't16': 3 F4 elements are not a whole number of bytes\n");
}
END_TEST

START_TEST(truncated_data)
{
    /* the header promises 12 bytes, the file stops after 10 */
    write_st("m.safetensors", "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]}}",
             "0123456789", 10);
    mpk_weight_req r[] = {REQ("a", MPKB_BF16, 2, 3)};
    expect_fail(at("m.safetensors"), r, 1, 1,
                "%s/m.safetensors: tensor 'a': data_offsets [0, 12] end past the data area of 10 "
                "bytes (truncated file?)\n");
}
END_TEST

START_TEST(hostile_index)
{
    write_shards();
    const char *index = "{\"weight_map\":{"
                        "\"a\":\"../model-00001-of-00002.safetensors\","
                        "\"b\":\"/etc/passwd\",\"c\":\"..\",\"d\":\"\",\"e\":7,"
                        "\"f\":\"sub/x.safetensors\"}}";
    write_raw("model.safetensors.index.json", index, strlen(index));
    mpk_weight_req r[] = {REQ("a", MPKB_BF16, 2, 3), REQ("b", MPKB_F32, 2), REQ0("c", MPKB_I32)};
    expect_fail(dir, r, 3, 6,
                "%s/model.safetensors.index.json: tensor 'a': shard "
                "'../model-00001-of-00002.safetensors' is not a file name in the index's "
                "directory (hostile index?)\n",
                "%s/model.safetensors.index.json: tensor 'b': shard '/etc/passwd' is not",
                "%s/model.safetensors.index.json: tensor 'c': shard '..' is not",
                "%s/model.safetensors.index.json: tensor 'd': shard '' is not",
                "%s/model.safetensors.index.json: tensor 'e': its shard in \"weight_map\" is not "
                "a string\n",
                "%s/model.safetensors.index.json: tensor 'f': shard 'sub/x.safetensors' is not");
}
END_TEST

START_TEST(bad_index)
{
    mpk_weight_req r[] = {REQ("a", MPKB_BF16, 2, 3)};
    const char *cases[][2] = {
        {"{\"weight_map\":", "%s/model.safetensors.index.json: the index is not valid JSON: "},
        {"[]", "%s/model.safetensors.index.json: the index is not a JSON object\n"},
        {"{}", "%s/model.safetensors.index.json: has no \"weight_map\"\n"},
        {"{\"weight_map\":[]}", "%s/model.safetensors.index.json: \"weight_map\" is not an "
                                "object\n"},
        {"{\"weight_map\":{\"a\":\"x\",\"a\":\"y\"}}",
         "%s/model.safetensors.index.json: the index names something twice: duplicate object "
         "key near '\"a\"'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_raw("model.safetensors.index.json", cases[i][0], strlen(cases[i][0]));
        expect_fail(dir, r, 1, 1, cases[i][1]);
    }
    /* a listed shard that is not there */
    const char *index = "{\"weight_map\":{\"a\":\"s.safetensors\"}}";
    write_raw("model.safetensors.index.json", index, strlen(index));
    expect_fail(dir, r, 1, 1, "%s/s.safetensors: cannot open: No such file or directory\n");
}
END_TEST

/* Every truncation and many single-byte changes of a good file: whatever
 * happens, no crash, no out-of-bounds read (ASan), and a failure always
 * says why. */
START_TEST(mangled_files_never_crash)
{
    char header[256];
    snprintf(header, sizeof header, "%s}", GOOD_HEADER);
    size_t hn = strlen(header), n = 8 + hn + 24;
    unsigned char *good = malloc(n), *bad = malloc(n);
    for (int i = 0; i < 8; i++)
        good[i] = (unsigned char)((uint64_t)hn >> (8 * i));
    memcpy(good + 8, header, hn);
    good_data(good + 8 + hn);
    static const unsigned char subst[] = {0, 1, '"', '{', '}', '[', ']', ',', ':', '-', '9', 0xff};
    for (size_t cut = 0; cut <= n; cut++)
        for (size_t pos = 0; pos < n; pos++)
            for (size_t s = 0; s < sizeof subst; s++) {
                /* the cuts first, then each substitution in the whole file */
                if ((cut < n && (pos || s)) || (cut == n && good[pos] == subst[s]))
                    continue;
                memcpy(bad, good, n);
                if (cut == n)
                    bad[pos] = subst[s];
                write_raw("m.safetensors", bad, cut);
                mpk_weight_req r[] = {REQ("a", MPKB_BF16, 2, 3), REQ("b", MPKB_F32, 2),
                                      REQ0("c", MPKB_I32)};
                opened o = load(at("m.safetensors"), r, 3);
                ck_assert(o.w != NULL || o.len > 0);
                for (int i = 0; o.w && i < 3; i++)
                    ck_assert_ptr_nonnull(r[i].data);
                opened_free(&o);
            }
    free(good);
    free(bad);
}
END_TEST

Suite *make_weights_suite(void)
{
    Suite *s = suite_create("weights");
    TCase *good = tcase_create("good");
    tcase_add_checked_fixture(good, make_dir, remove_dir);
    tcase_add_test(good, single_file);
    tcase_add_test(good, directory_with_model_safetensors);
    tcase_add_test(good, sharded_directory);
    tcase_add_test(good, nothing_requested);
    suite_add_tcase(s, good);

    TCase *needs = tcase_create("needs");
    tcase_add_checked_fixture(needs, make_dir, remove_dir);
    tcase_add_test(needs, every_mismatch_is_reported);
    tcase_add_test(needs, missing_in_index_and_in_shard);
    tcase_add_test(needs, names_are_escaped);
    tcase_add_test(needs, bad_requests);
    suite_add_tcase(s, needs);

    TCase *bad = tcase_create("bad files");
    tcase_add_checked_fixture(bad, make_dir, remove_dir);
    tcase_add_test(bad, no_checkpoint_there);
    tcase_add_test(bad, too_short);
    tcase_add_test(bad, header_length_past_eof);
    tcase_add_test(bad, header_length_absurd);
    tcase_add_test(bad, garbage_json);
    tcase_add_test(bad, non_object_json);
    tcase_add_test(bad, duplicate_names);
    tcase_add_test(bad, bad_entries);
    tcase_add_test(bad, truncated_data);
    tcase_add_test(bad, hostile_index);
    tcase_add_test(bad, bad_index);
    tcase_add_test(bad, overlap_gap_and_trailing_bytes);
    tcase_add_test(bad, empty_index);
    tcase_add_test(bad, mangled_files_never_crash);
    tcase_set_timeout(bad, 60);
    suite_add_tcase(s, bad);
    return s;
}
